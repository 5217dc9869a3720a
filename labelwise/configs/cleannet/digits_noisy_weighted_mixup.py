# CleanNet weights with batch Mixup / CutMix: labelwise.WeightedClsDataPreprocessor mixes each
# sample's weight with the same permutation and ratio as its image and target, so the loss of a
# mixed sample is lam * w_i * CE(y_i) + (1 - lam) * w_j * CE(y_j).
_base_ = ['./digits_noisy_weighted.py']

data_preprocessor = dict(
    batch_augments=dict(augments=[dict(type='Mixup', alpha=0.2), dict(type='CutMix', alpha=1.0)]))
