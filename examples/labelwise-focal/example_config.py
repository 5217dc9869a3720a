# The digit scenes with 30% of labels known, trained with the example plugin's focal loss.
# Run from the labelwise checkout, with the plugin installed:
#   LABELWISE_DATA_ROOT=data/digits python .../mmpretrain/.mim/tools/train.py examples/labelwise-focal/example_config.py
_base_ = ['../../configs/pumlc/digits_partial_ignore.py']

model = dict(head=dict(loss=dict(_delete_=True, type='labelwise.PartialFocalLoss', gamma=2.0)))
