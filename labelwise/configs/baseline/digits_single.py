# Single-label multi-object digit scenes: the label is the main digit; others are present.
_base_ = ['../_base_/digits_resnet.py']

train_dataloader = dict(dataset=dict(type='CustomDataset', ann_file='single/train.txt'))
test_dataloader = dict(dataset=dict(type='CustomDataset', ann_file='single/test.txt'))
