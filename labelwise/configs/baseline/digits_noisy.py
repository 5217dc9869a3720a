# Noisy single-label digit scenes (20% symmetric noise); the test split is clean.
# Other noise settings: --cfg-options train_dataloader.dataset.ann_file=noisy-pairflip-r0.4/train.txt
_base_ = ['../_base_/digits_resnet.py']

train_dataloader = dict(dataset=dict(type='CustomDataset', ann_file='noisy-symmetric-r0.2/train.txt'))
test_dataloader = dict(dataset=dict(type='CustomDataset', ann_file='noisy-symmetric-r0.2/test.txt'))
