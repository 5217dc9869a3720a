# Multi-label digit scenes with partial labels (30% of labels known), "assume negative"
# baseline: labelwise.PartialMultiLabelDataset keeps the unknown state in `partial_labels`,
# while the stock head trains on the known positives and treats the rest as negatives.
# Other proportions: --cfg-options train_dataloader.dataset.ann_file=partial-p0.1/train.json
_base_ = ['./digits_multilabel.py']

train_dataloader = dict(dataset=dict(type='labelwise.PartialMultiLabelDataset', ann_file='partial-p0.3/train.json'))
