from .dataset_factory import SYNTHETIC_NAME, apply_synthetic_defaults, create_dataset, dataset_classes, is_synthetic
from .synthetic import SYNTHETIC_CLASSES, SYNTHETIC_DATA_CONFIG, SyntheticTextures, render_image
