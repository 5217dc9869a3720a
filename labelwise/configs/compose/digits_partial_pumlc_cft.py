# PU-MLC training followed by CFT calibration on the partial-label digit scenes (30% known):
# the model trains with the PU-MLC loss, then labelwise.CFTHook re-fits each category's row of
# head.fc on the known labels (selecting on the validation split's known labels) and writes
# <work_dir>/cft/: calibrated.pth, cft_head.npz, cft_report.json, cft_scores.png,
# cft_reliability.png and cft_head.onnx (features -> logits, probabilities, labels). apply=True: the final test evaluates the
# calibrated layer.
#   labelwise train --data-root data/digits --regime partial-p0.3 \
#       --config compose/digits_partial_pumlc_cft --work-dir work/pumlc-cft
_base_ = ['../pumlc/digits_partial_pumlc.py']

custom_hooks = [
    dict(type='labelwise.CFTHook', val_ann='partial-p0.3/val.json', apply=True,
         options=dict(optimizer='best', metric='ap', epochs=5000, early_stopping=300)),
]
