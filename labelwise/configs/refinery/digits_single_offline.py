# Offline Label Refinery (an approximation of the online mode): per-image top-k soft labels,
# precomputed once on the whole image by `labelwise refine-store`, served as gt_score by the
# pipeline. Every random crop of an image gets the same label.
#   labelwise refine-store --config refinery/digits_single --checkpoint work/gen1/epoch_10.pth \
#       --out work/refined-labels
#   LABELWISE_REFINERY_STORE=work/refined-labels labelwise train ... --config refinery/digits_single_offline
_base_ = ['../baseline/digits_single.py']

store = '{{$LABELWISE_REFINERY_STORE:work_dirs/refined-labels}}'
# The baseline's training pipeline with the stored label looked up first (it needs only img_path).
train_pipeline = [
    dict(type='labelwise.LoadRefinedLabels', store=store),
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.08, 1.0), backend='pillow'),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
model = dict(head=dict(loss=dict(type='CrossEntropyLoss', use_soft=True)))
