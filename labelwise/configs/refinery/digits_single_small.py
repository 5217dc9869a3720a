# Cross-architecture refinement: a half-width ResNet-18 student (base_channels 16) refined
# online by a trained full-width model (the refinery may be any mmpretrain or timm classifier).
#   LABELWISE_REFINERY_CHECKPOINT=work/refine/gen1/epoch_10.pth \
#     labelwise train --data-root data/digits --regime single --work-dir work/small \
#     --config refinery/digits_single_small
# (or mmpretrain's tools/train.py configs/refinery/digits_single_small.py, with
# LABELWISE_DATA_ROOT set as well).
_base_ = ['./digits_single.py']

model = dict(
    backbone=dict(base_channels=16),
    head=dict(in_channels=128),
)
data_preprocessor = dict(
    refinery=dict(
        config='refinery/digits_single',  # the refinery's architecture (its config's model)
        checkpoint='{{$LABELWISE_REFINERY_CHECKPOINT:work_dirs/refine/gen1/epoch_10.pth}}',
        bn_mode='eval',
    ))
