# Baseline "ignore unknowns": BCE on the known labels only (positives and known negatives),
# through a head whose loss target is the sample's partial labels (1 / 0 / -1).
_base_ = ['../baseline/digits_partial.py']

model = dict(head=dict(type='labelwise.PartialMultiLabelLinearClsHead',
                       loss=dict(_delete_=True, type='labelwise.PartialBCELoss', unknown='ignore')))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.5, 1.0), backend='pillow'),
    dict(type='PackInputs', algorithm_keys=['partial_labels']),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
