# CleanNet hard mode that drops suspected noise: train only on samples with score >= threshold.
# LABELWISE_CLEANNET_SCORES=path/to/scores.csv labelwise train --config cleannet/digits_noisy_drop ...
# threshold=None keeps the rows whose weight column is > 0 (the threshold chosen by `fit`).
_base_ = ['../baseline/digits_noisy.py']

score_file = '{{$LABELWISE_CLEANNET_SCORES:work_dirs/cleannet/scores.csv}}'

train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='labelwise.CleanNetSubset',
        score_file=score_file,
        threshold=None,
        dataset={{_base_.train_dataloader.dataset}},
    ))
