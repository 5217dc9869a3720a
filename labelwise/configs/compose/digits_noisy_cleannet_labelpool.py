# CleanNet weights x LabelPooling targets on the noisy digit scenes (20% symmetric noise):
# every random crop is trained on the soft target pooled from its ReLabel label map, and that
# sample's per-sample soft-target cross-entropy is multiplied by its CleanNet weight:
#   loss = sum_i w_i * CE(softmax(z_i), pooled_i) / sum_i w_i       (normalize='weight_sum')
# Mixup / CutMix (data_preprocessor.batch_augments) mix the weights with the samples.
# Needs a score file (docs/methods/cleannet.md) and label maps of the training images
# (docs/methods/labelpool.md), then:
#   LABELWISE_CLEANNET_SCORES=scores.csv LABELWISE_LABEL_MAPS=data/labelmaps/noisy-train \
#       labelwise train --data-root data/digits --regime noisy-symmetric-r0.2 \
#       --config compose/digits_noisy_cleannet_labelpool --work-dir work/cleannet-labelpool
_base_ = ['../cleannet/digits_noisy_weighted.py']

score_file = '{{$LABELWISE_CLEANNET_SCORES:work_dirs/cleannet/scores.csv}}'
label_maps = '{{$LABELWISE_LABEL_MAPS:data/labelmaps/noisy-train}}'

# labelwise.WeightedClsDataPreprocessor and labelwise.WeightedLinearClsHead come from the base;
# the head's per-sample loss is now the soft-target cross-entropy on gt_score.
model = dict(head=dict(loss=dict(type='CrossEntropyLoss', use_soft=True)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='labelwise.RandomResizedCropWithBox', scale=64, crop_ratio_range=(0.08, 1.0), backend='pillow'),
    dict(type='labelwise.LabelPooling', label_maps=label_maps, num_classes=10),         # gt_score
    dict(type='labelwise.CleanNetWeights', score_file=score_file, mode='file'),        # sample_weight
    dict(type='PackInputs', algorithm_keys=['sample_weight']),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
