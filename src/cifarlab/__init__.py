"""cifarlab: a reproducible CIFAR-10 study of MLPs and CNNs with hand-written BN and Dropout."""

__version__ = "0.1.0"
