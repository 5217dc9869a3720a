# The partial-label baseline (30% of labels known, unknowns trained as negatives), then CFT:
# after training, labelwise.CFTHook re-fits each category's row of head.fc on the known labels
# of the training split, selecting on the known labels of the validation split, and writes
# <work_dir>/cft/: calibrated.pth, cft_head.npz, cft_report.json, cft_scores.png,
# cft_reliability.png, cft_head.onnx.
# apply=True loads the calibrated layer into the model, so the final test reports it.
_base_ = ['../baseline/digits_partial.py']

custom_hooks = [
    dict(type='labelwise.CFTHook', val_ann='partial-p0.3/val.json', apply=True,
         options=dict(optimizer='best', metric='ap', epochs=5000, early_stopping=300)),
]
