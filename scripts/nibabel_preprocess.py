"""What src/imaging/preprocess.rs does to a volume, with nibabel + scipy: the reference
the benchmarks time cdwqc against and compare its tensors with."""
import numpy as np


def nibabel_preprocess(path, shape, spacing, low_pct=0.5, high_pct=99.5):
    """Load, RAS resampling (trilinear) on a grid around the head's bounding box, clip to
    percentiles, min-max: what src/imaging/preprocess.rs does, with nibabel + scipy."""
    import nibabel as nib
    from scipy import ndimage

    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if data.ndim > 3:
        data = data.reshape(data.shape[:3] + (-1,))[..., 0]
    finite = np.isfinite(data)
    values = data[finite]
    low, high = np.percentile(values, [low_pct, high_pct], method="nearest")
    p2, p98 = np.percentile(values, [2, 98], method="nearest")
    above = np.argwhere(finite & (data > p2 + 0.1 * (p98 - p2)))
    box = (above.min(0) + above.max(0)) / 2 if len(above) else (np.array(data.shape) - 1) / 2
    centre = img.affine[:3, :3] @ box + img.affine[:3, 3]
    inverse = np.linalg.inv(img.affine)
    shape = np.array(shape)
    origin = centre - (shape - 1) / 2 * spacing
    matrix = inverse[:3, :3] * spacing
    offset = inverse[:3, :3] @ origin + inverse[:3, 3]
    source = np.where(finite, data, low)
    out = ndimage.affine_transform(source, matrix, offset, output_shape=tuple(shape), order=1,
                                   mode="constant", cval=low)
    if high <= low:
        return np.zeros(out.shape, np.float32)
    return ((np.clip(out, low, high) - low) / (high - low)).astype(np.float32)
