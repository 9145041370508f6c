"""ImageNet channel statistics: VideoMAE normalises clips with them (the data layer) and its pretraining
targets undo them (the MAE model). Both import them from here, so the network never imports the data layer."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
