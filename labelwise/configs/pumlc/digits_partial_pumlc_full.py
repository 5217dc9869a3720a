# PU-MLC with the reference recipe (TAKELAMAG/PU-MLC train.py and README, COCO command) at the
# digit scenes' scale: PU loss + MixUp regulariser + local-global convolution, fine-tuned from a
# trained backbone with only the global branches, layer4 and the head trained and every
# BatchNorm in eval mode; Adam (lr 1e-4, L2 1e-4), OneCycle (pct_start 0.2) over twice the run
# and stopped halfway (the reference: 80 epochs, stopped at 40 on COCO), model EMA; multi-scale
# square crops (resize to 8/7 of the input, one of five crop sizes, resize back).
# Start it from a trained backbone: `--pretrained CKPT` of benchmarks/pumlc_quality.py, or
#   --cfg-options "model.backbone.init_cfg=dict(type='Pretrained',checkpoint='P.pth',prefix='backbone.')"
# The protocol table and the deviations are in docs/methods/pumlc.md.
_base_ = ['./digits_partial_pumlc_mixup.py']

model = dict(lgc=dict(num_heads=8, reduction=4, freeze=True))

# the reference at 448 px: Resize(512) -> one of RandomCrop(512, 448, 384, 320, 256) ->
# Resize(448) -> flip. Here 64 px: Resize(73) -> RandomCrop(73 / 64 / 55 / 46 / 37) -> Resize(64),
# no flip (mirrored digits are not digits).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(73, 73), backend='pillow', interpolation='bicubic'),
    dict(type='RandomChoice', transforms=[[dict(type='RandomCrop', crop_size=size)] for size in (73, 64, 55, 46, 37)]),
    dict(type='Resize', scale=(64, 64), backend='pillow', interpolation='bicubic'),
    dict(type='PackInputs', algorithm_keys=['partial_labels']),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))

# Adam with L2 weight decay 1e-4 (torch's Adam adds it to the gradient, as the reference)
optim_wrapper = dict(_delete_=True, optimizer=dict(type='Adam', lr=1e-4, weight_decay=1e-4))
# torch's OneCycleLR defaults as the reference (div_factor 25, final_div_factor 1e4, cosine);
# end = 2 x max_epochs: the cycle spans twice the run, which stops halfway, as the reference.
# If you change max_epochs, change `end` with it.
param_scheduler = [
    dict(type='OneCycleLR', eta_max=1e-4, pct_start=0.2, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
]
train_cfg = dict(by_epoch=True, max_epochs=10)
# Model EMA, evaluated in place of the raw weights (the reference reports the better of the two
# on its validation set; we evaluate the EMA weights only, chosen before any run). The
# reference's decay 0.9997 (COCO) / 0.991 (VOC) averages over the last 4-7 % of its steps;
# momentum 0.025 (decay 0.975) does the same over this run's ~780 steps.
custom_hooks = [dict(type='EMAHook', momentum=0.025, priority='ABOVE_NORMAL')]
