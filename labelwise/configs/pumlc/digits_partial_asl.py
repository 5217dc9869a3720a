# Baseline: mmpretrain's AsymmetricLoss with unknown labels as negatives ("assume negative").
_base_ = ['../baseline/digits_partial.py']

model = dict(head=dict(loss=dict(_delete_=True, type='AsymmetricLoss', gamma_pos=0.0, gamma_neg=4.0, clip=0.05)))
