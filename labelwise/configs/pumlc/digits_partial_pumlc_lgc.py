# PU-MLC loss with every 3x3 conv of the ResNet turned into a local-global convolution.
# Trained from scratch here, so nothing is frozen; to fine-tune a trained model the way the
# paper does, set load_from=... and lgc=dict(freeze=True): only the global branches,
# backbone.layer4 and the head train, and every BatchNorm stays in eval mode.
_base_ = ['./digits_partial_pumlc.py']

model = dict(lgc=dict(num_heads=8, reduction=4, freeze=False))
