# CleanNet per-sample weights on the noisy digit scenes (20% symmetric noise; test is clean).
# 1. labelwise cleannet features / fit / score (docs/methods/cleannet.md) -> a score file;
# 2. LABELWISE_CLEANNET_SCORES=path/to/scores.csv labelwise train --config cleannet/digits_noisy_weighted ...
# The weight column of the score file is used (hard 1[s >= t] or soft max(0, s), as scored);
# override with --cfg-options train_dataloader.dataset.pipeline.2.mode=soft
_base_ = ['../baseline/digits_noisy.py']

score_file = '{{$LABELWISE_CLEANNET_SCORES:work_dirs/cleannet/scores.csv}}'

data_preprocessor = dict(type='labelwise.WeightedClsDataPreprocessor')
model = dict(head=dict(type='labelwise.WeightedLinearClsHead', normalize='weight_sum'))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=64, crop_ratio_range=(0.08, 1.0), backend='pillow'),
    dict(type='labelwise.CleanNetWeights', score_file=score_file, mode='file'),
    dict(type='PackInputs', algorithm_keys=['sample_weight']),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
