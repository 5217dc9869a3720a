# LabelPooling on the single-label multi-object digit scenes: each random crop is trained on
# the soft target pooled from its ReLabel label map (docs/methods/labelpool.md).
# Make the maps first, e.g. with an annotator trained by `labelwise train`:
#   labelwise relabel data/labelmaps/single-train --data-root data/digits \
#       --ann-file single/train.txt --config baseline/digits_single \
#       --checkpoint work/annotator/mmpretrain/epoch_10.pth --input-size 64
# then: LABELWISE_LABEL_MAPS=data/labelmaps/single-train labelwise train \
#       --data-root data/digits --regime single --config labelpool/digits_single --work-dir ...
_base_ = ['../baseline/digits_single.py']

label_maps = '{{$LABELWISE_LABEL_MAPS:data/labelmaps/single-train}}'

model = dict(head=dict(loss=dict(type='CrossEntropyLoss', use_soft=True)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    # RandomResizedCrop that records the crop box (same draws, same image)
    dict(type='labelwise.RandomResizedCropWithBox', scale=64, crop_ratio_range=(0.08, 1.0),
         backend='pillow'),
    # the store key is found from img_path (paths relative to the data root), so the
    # dataset may move without touching this line
    dict(type='labelwise.LabelPooling', label_maps=label_maps, num_classes=10),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
