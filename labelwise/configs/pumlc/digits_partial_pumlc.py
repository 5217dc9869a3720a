# PU-MLC on the multi-label digit scenes with partial labels (30% of labels known): the
# positive-unlabeled loss (adaptive temperature and re-balance) in a stock multi-label head.
# The stock head's target is the known positives, which is all the loss uses.
# Other proportions: --cfg-options train_dataloader.dataset.ann_file=partial-p0.1/train.json
# Variants: digits_partial_pumlc_mixup.py (+ MixUp regulariser), digits_partial_pumlc_lgc.py
# (+ local-global convolution).
_base_ = ['../baseline/digits_partial.py']

model = dict(
    type='labelwise.PUMLCClassifier',
    head=dict(loss=dict(_delete_=True, type='labelwise.PUMLCLoss', gamma=0.55, alpha=1.0)),
)
