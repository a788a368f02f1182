"""Published state-dict layouts (key -> shape, URL) of the ImageNet backbones; written by benchmarks/make_manifests.py."""
