"""Training values and tiny models the studies share (plain data)."""

from __future__ import annotations

# The fast recipe shrinks the batch on small data unless one is given (min_steps_per_epoch): the
# scales that use it give one, so every run trains with exactly the values the study states.

# smoke: seconds per cell on the embedded digits at their native 8x8, for the tests.
SMOKE = dict(image_size=8, subset=256, val_size=64, iters=24, batch_size=32, recipe="fast", precise_bn=2)
SMOKE_ABOUT = ("digits at 8x8 (192 training, 64 validation, 256 test images), 24 steps at batch 32 "
               "(4 epochs), recipe fast, tiny widths: it checks the machinery; the networks barely "
               "start learning, so its verdicts say nothing about the claim")

# cpu: CIFAR-10 on two CPU cores: a fixed random 10,000 of the training images (the same for
# every seed; 1,000 of them held out for validation) and the 10,000 test images, a few epochs of
# the one-cycle fast recipe.
CPU = dict(subset=10_000, val_size=1_000, batch_size=128, recipe="fast", precise_bn=5)


def cpu_about(epochs: int, extra: str = "") -> str:
    return (f"CIFAR-10 from --data at 32x32: a fixed 10,000 of the training images (9,000 to train, "
            f"1,000 to validate) and the 10,000 test images; {epochs} epochs at batch 128, recipe "
            f"fast{extra}")


# paper: the full training set (45,000 / 5,000 split, as the ResNet paper), the papers' recipes.
PAPER = dict(val_size=5_000)

# A CIFAR ResNet a few channels wide, for smoke runs.
TINY_RESNET = {"widths": [4, 8, 16], "stem_width": 4}

# GoogLeNet rows (name, #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj): one module per
# stage, a few channels wide, for smoke runs; and the paper's nine rows at a quarter of their
# widths for the cpu scale.
TINY_INCEPTION = [["3a", 4, 4, 4, 2, 4, 4], ["4a", 4, 4, 8, 2, 4, 4], ["5a", 8, 4, 8, 2, 4, 4]]
# (GoogLeNet Table 1, as cnnzoo.models.googlenet.INCEPTION_V1, which imports torch)
_V1 = [("3a", 64, 96, 128, 16, 32, 32), ("3b", 128, 128, 192, 32, 96, 64),
       ("4a", 192, 96, 208, 16, 48, 64), ("4b", 160, 112, 224, 24, 64, 64),
       ("4c", 128, 128, 256, 24, 64, 64), ("4d", 112, 144, 288, 32, 64, 64),
       ("4e", 256, 160, 320, 32, 128, 128), ("5a", 256, 160, 320, 32, 128, 128),
       ("5b", 384, 192, 384, 48, 128, 128)]
QUARTER_INCEPTION = [[name, *(w // 4 for w in widths)] for name, *widths in _V1]

# A two-stage VGG-style net with BN, for smoke runs.
TINY_VGG = {"cfg": [8, "M", 16, "M"], "norm_layer": "bn"}
