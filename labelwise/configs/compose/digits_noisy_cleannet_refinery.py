# CleanNet weights x Label Refinery targets on the noisy digit scenes (20% symmetric noise):
# the online refinery's soft target of each (augmented) sample, its soft-target cross-entropy
# multiplied by the sample's CleanNet weight:
#   loss = sum_i w_i * CE(softmax(z_i), softmax(refinery(x_i))) / sum_i w_i
# labelwise.RefineryDataPreprocessor is a labelwise.WeightedClsDataPreprocessor: with Mixup /
# CutMix a mixed sample gets w' = lam w_i + (1 - lam) w_j and the refinery's target of the
# mixed image. The refinery is a model trained on the noisy labels (e.g. the baseline):
#   LABELWISE_CLEANNET_SCORES=scores.csv LABELWISE_REFINERY_CHECKPOINT=work/base/mmpretrain/epoch_10.pth \
#       labelwise train --data-root data/digits --regime noisy-symmetric-r0.2 \
#       --config compose/digits_noisy_cleannet_refinery --work-dir work/cleannet-refinery
# Generation chaining (generation 1 weighted on the ground truth, then self-refined):
#   LABELWISE_CLEANNET_SCORES=scores.csv labelwise refine --config compose/digits_noisy_cleannet_refinery \
#       --generations 3 --data-root data/digits --work-dir work/refine-weighted
_base_ = ['../cleannet/digits_noisy_weighted.py']

data_preprocessor = dict(
    type='labelwise.RefineryDataPreprocessor',
    refinery=dict(
        config='baseline/digits_noisy',  # the refinery's architecture (its config's model)
        checkpoint='{{$LABELWISE_REFINERY_CHECKPOINT:work_dirs/refine/gen1/epoch_10.pth}}',
        bn_mode='eval',
    ))
# labelwise.WeightedLinearClsHead from the base, on the refinery's soft targets.
model = dict(head=dict(loss=dict(type='CrossEntropyLoss', use_soft=True)))
