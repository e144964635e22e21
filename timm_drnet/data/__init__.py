from .bad_images import (
    BadImage, BadImageError, BadImageMonitor, CheckedImageDataset, SplitBadImages, create_loader, read_image,
    skipped_files,
)
from .dataset_factory import SYNTHETIC_NAME, apply_synthetic_defaults, create_dataset, dataset_classes, is_synthetic
from .subset import LoaderSubset
from .synthetic import SYNTHETIC_CLASSES, SYNTHETIC_DATA_CONFIG, SyntheticTextures, render_image
from .calibration import calibration_split
from .transforms import candidate_transforms
