# Multi-label digit scenes with full labels: which digits are present. Test metric: mAP.
_base_ = ['../_base_/digits_resnet.py']

model = dict(head=dict(_delete_=True, type='MultiLabelLinearClsHead', num_classes=10, in_channels=256,
                       loss=dict(type='CrossEntropyLoss', use_sigmoid=True)))
# Crops of at least half the image: a smaller one would cut out digits the labels still name.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.5, 1.0), backend='pillow'),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(type='MultiLabelDataset', ann_file='multilabel/train.json',
                                     pipeline=train_pipeline))
test_dataloader = dict(dataset=dict(type='MultiLabelDataset', ann_file='multilabel/test.json'))
test_evaluator = [dict(type='AveragePrecision'), dict(type='MultiLabelMetric', average='macro')]
