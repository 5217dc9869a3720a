# PU-MLC loss plus its MixUp regulariser (a second forward pass on half the batch; the
# regulariser's soft targets need the partial labels, carried by PackInputs).
_base_ = ['./digits_partial_pumlc.py']

model = dict(
    mixup=dict(alpha=0.3, loss_weight=1.0),
    head=dict(type='labelwise.PartialMultiLabelLinearClsHead'),
)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.5, 1.0), backend='pillow'),
    dict(type='PackInputs', algorithm_keys=['partial_labels']),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
