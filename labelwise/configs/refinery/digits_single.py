# Label Refinery on the single-label digit scenes (online soft targets).
# The refinery is empty (dict()) here: `labelwise refine --config refinery/digits_single ...` trains
# generation 1 with it empty (ground truth as one-hot soft targets) and fills it for every
# later generation with the previous generation's config and final checkpoint. To refine with
# a model of your own, set it:
#   data_preprocessor = dict(refinery=dict(config='path/config.py', checkpoint='path.pth'))
_base_ = ['../baseline/digits_single.py']

data_preprocessor = dict(
    type='labelwise.RefineryDataPreprocessor',
    # dict(): no refinery. Fill in dict(config=..., checkpoint=..., bn_mode='eval', temperature=1.0).
    refinery=dict(),
)
# Soft targets (refinery probabilities, or one-hot ground truth without a refinery).
model = dict(head=dict(loss=dict(type='CrossEntropyLoss', use_soft=True)))
