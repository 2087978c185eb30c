"""Image-quality metrics of the paper's quantitative protocol (docs/architecture.md, "Evaluation").

Pure functions on RGB arrays in 0..255 (uint8 or float, shape (H, W, 3)), plus a streaming
accumulator of Inception features so FID over thousands of images needs bounded memory. The
Inception network itself lives in `gcpcolor.models.inception`; folders, pairing and reports in
`gcpcolor.evaluation`.

- FID: Fréchet distance between Gaussians fitted to pool features, as in pytorch-fid.
- Colourfulness (Hasler & Süsstrunk 2003): σ + 0.3·μ of the opponent channels; variant
  "signed" is the paper's, "absolute" (|rg|, |yb|) the one the colorization literature uses.
- PSNR and SSIM with the settings of `skimage.metrics` (Gaussian window σ = 1.5, K1 = 0.01,
  K2 = 0.03, population covariance), data range 255.
- LPIPS only when the optional `lpips` package and its backbone weights are already on disk.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

ColorfulnessVariant = Literal["absolute", "signed"]
COLORFULNESS_VARIANTS: tuple[ColorfulnessVariant, ...] = ("absolute", "signed")
DEFAULT_COLORFULNESS_VARIANT: ColorfulnessVariant = "absolute"

DATA_RANGE = 255.0

# SSIM constants of Wang et al. 2004, as skimage uses them with gaussian_weights=True.
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
# skimage's window: scipy's gaussian_filter truncated at 3.5 σ -> radius int(3.5·1.5 + 0.5) = 5.
SSIM_RADIUS = int(3.5 * SSIM_SIGMA + 0.5)
SSIM_WINDOW = 2 * SSIM_RADIUS + 1


def _as_rgb255(image: np.ndarray, name: str = "image") -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name}: expected an RGB array of shape (H, W, 3), got {array.shape}")
    return array


def _check_same_shape(reference: np.ndarray, test: np.ndarray) -> None:
    if reference.shape != test.shape:
        raise ValueError(f"images differ in shape: {reference.shape} vs {test.shape}")


# --------------------------------------------------------------------------- PSNR and SSIM
def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Peak signal-to-noise ratio in dB over all pixels and channels; inf for identical images."""
    reference, test = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    _check_same_shape(reference, test)
    mse = float(np.mean((reference - test) ** 2))
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range**2 / mse)


def _gaussian_taps() -> np.ndarray:
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return taps / taps.sum()


def _gaussian_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of the first two axes, only where the window fits.

    skimage filters with reflected borders and then discards a border of `SSIM_RADIUS` pixels
    before averaging, so the pixels it keeps never see the padding: a "valid" filter gives the
    same numbers without choosing a padding mode.
    """
    height, width = image.shape[:2]
    rows = sum(tap * image[i : height - 2 * SSIM_RADIUS + i] for i, tap in enumerate(taps))
    return sum(tap * rows[:, j : width - 2 * SSIM_RADIUS + j] for j, tap in enumerate(taps))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float = DATA_RANGE) -> float:
    """Mean structural similarity, averaged over channels for (H, W, C) inputs.

    Matches `skimage.metrics.structural_similarity(reference, test, channel_axis=-1,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range)`.
    """
    x, y = np.asarray(reference, np.float64), np.asarray(test, np.float64)
    _check_same_shape(x, y)
    if x.ndim == 2:
        x, y = x[:, :, None], y[:, :, None]
    if min(x.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels, got {x.shape[:2]}")
    taps = _gaussian_taps()
    mu_x, mu_y = _gaussian_valid(x, taps), _gaussian_valid(y, taps)
    var_x = _gaussian_valid(x * x, taps) - mu_x * mu_x
    var_y = _gaussian_valid(y * y, taps) - mu_y * mu_y
    cov_xy = _gaussian_valid(x * y, taps) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return float(np.mean(numerator / denominator))


# --------------------------------------------------------------------------- colourfulness
def colorfulness(image: np.ndarray, variant: ColorfulnessVariant = DEFAULT_COLORFULNESS_VARIANT) -> float:
    """Hasler & Süsstrunk colourfulness of an RGB image in 0..255.

    rg = R - G, yb = (R + G)/2 - B; CF = sqrt(σrg² + σyb²) + 0.3·sqrt(μrg² + μyb²) with
    population standard deviations. "absolute" takes |rg| and |yb| before the statistics.
    """
    if variant not in COLORFULNESS_VARIANTS:
        raise ValueError(f"colourfulness variant must be one of {COLORFULNESS_VARIANTS}, got {variant!r}")
    rgb = _as_rgb255(image)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    rg = red - green
    yb = 0.5 * (red + green) - blue
    if variant == "absolute":
        rg, yb = np.abs(rg), np.abs(yb)
    spread = math.hypot(float(rg.std()), float(yb.std()))
    centre = math.hypot(float(rg.mean()), float(yb.mean()))
    return spread + 0.3 * centre


def colorfulness_all(image: np.ndarray) -> dict[ColorfulnessVariant, float]:
    """Both variants at once, keyed by variant name."""
    return {variant: colorfulness(image, variant) for variant in COLORFULNESS_VARIANTS}


def delta_colorfulness(outputs: Sequence[float], truth: Sequence[float]) -> float:
    """Dataset-level ΔColorful = |mean CF(outputs) - mean CF(ground truth)|."""
    if len(outputs) == 0 or len(truth) == 0:
        raise ValueError("ΔColorful needs at least one output and one ground-truth value")
    return abs(float(np.mean(outputs)) - float(np.mean(truth)))


# --------------------------------------------------------------------------- FID
def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray
) -> float:
    """Fréchet distance |mu1 - mu2|² + Tr(S1 + S2 - 2·sqrt(S1·S2)) between two Gaussians, in float64.

    Tr sqrt(S1·S2) is computed as Σ sqrt(λ) over the eigenvalues λ of the symmetric matrix
    S1^½·S2·S1^½, which is similar to S1·S2: two symmetric eigendecompositions instead of a
    general matrix square root (seconds instead of minutes at 2048², no complex round-off, and
    exact for the singular covariances of fewer images than feature dimensions).
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"mismatched statistics: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    difference = mu1 - mu2
    values, vectors = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    root1 = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    product = root1 @ sigma2 @ root1
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2), 0.0, None)).sum()
    return float(difference @ difference + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_root)


class FeatureStatistics:
    """Running mean and covariance of feature vectors, in float64, in memory O(D²) not O(N·D).

    Keeps the sum and the sum of outer products; the covariance uses N - 1 like `np.cov`
    (what pytorch-fid computes on the full feature matrix).
    """

    def __init__(self, dims: int, keep_features: bool = False) -> None:
        self.dims = dims
        self.count = 0
        self._sum = np.zeros(dims, dtype=np.float64)
        self._outer = np.zeros((dims, dims), dtype=np.float64)
        #: the vectors themselves (float32), for KID; kept only when asked
        self.features: list[np.ndarray] | None = [] if keep_features else None

    def update(self, features: np.ndarray) -> None:
        batch = np.asarray(features, dtype=np.float64)
        if batch.ndim != 2 or batch.shape[1] != self.dims:
            raise ValueError(f"expected features of shape (N, {self.dims}), got {batch.shape}")
        self.count += batch.shape[0]
        self._sum += batch.sum(axis=0)
        self._outer += batch.T @ batch
        if self.features is not None:
            self.features.append(batch.astype(np.float32))

    def mean(self) -> np.ndarray:
        if self.count == 0:
            raise ValueError("no features accumulated")
        return self._sum / self.count

    def covariance(self) -> np.ndarray:
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 feature vectors, got {self.count}")
        mean = self.mean()
        return (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)

    def frechet_distance(self, other: "FeatureStatistics") -> float:
        return frechet_distance(self.mean(), self.covariance(), other.mean(), other.covariance())

    def kernel_inception_distance(self, other: "FeatureStatistics") -> float:
        if self.features is None or other.features is None:
            raise ValueError("KID needs the feature vectors: create the statistics with keep_features=True")
        return kernel_inception_distance(np.concatenate(self.features), np.concatenate(other.features))


def _polynomial_mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with the kernel k(a, b) = (a·b / d + 1)³ (Bińkowski et al. 2018)."""
    dims = x.shape[1]
    k_xx = (x @ x.T / dims + 1.0) ** 3
    k_yy = (y @ y.T / dims + 1.0) ** 3
    k_xy = (x @ y.T / dims + 1.0) ** 3
    m, n = len(x), len(y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def kernel_inception_distance(
    features_a: np.ndarray, features_b: np.ndarray, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> float:
    """KID: the unbiased polynomial-kernel MMD² between two feature sets, averaged over
    `subsets` random subsets of min(subset_size, N_a, N_b) vectors each (seeded). Unlike FID it
    has no bias that depends on the number of images, so small sets compare fairly."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"mismatched feature sets {a.shape} and {b.shape}")
    size = min(subset_size, len(a), len(b))
    if size < 2:
        raise ValueError("KID needs at least 2 feature vectors on each side")
    if size == len(a) == len(b):
        return _polynomial_mmd2_unbiased(a, b)  # every subset would be the whole set
    generator = np.random.default_rng(seed)
    values = [
        _polynomial_mmd2_unbiased(a[generator.choice(len(a), size, replace=False)], b[generator.choice(len(b), size, replace=False)])
        for _ in range(subsets)
    ]
    return float(np.mean(values))


def frechet_distance_of_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID of two feature matrices (rows are images) without D×D matrices: with centred
    X_a, X_b, the nonzero eigenvalues of S_a·S_b are the squared singular values of
    X_a·X_bᵀ / sqrt((n_a - 1)(n_b - 1)), so Tr sqrt(S_a·S_b) needs one n_a×n_b SVD. Exact, and
    fast for the few hundred images a bootstrap resamples many times."""
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"FID needs two (N >= 2, D) feature matrices, got {a.shape} and {b.shape}")
    mean_a, mean_b = a.mean(axis=0), b.mean(axis=0)
    centred_a, centred_b = a - mean_a, b - mean_b
    scale_a, scale_b = len(a) - 1, len(b) - 1
    trace_root = np.linalg.svd(centred_a @ centred_b.T, compute_uv=False).sum() / math.sqrt(scale_a * scale_b)
    traces = (centred_a**2).sum() / scale_a + (centred_b**2).sum() / scale_b
    difference = mean_a - mean_b
    return float(difference @ difference + traces - 2.0 * trace_root)


#: Resamples of the paired FID bootstrap and the coverage of its intervals.
FID_BOOTSTRAP_RESAMPLES = 1000
FID_INTERVAL = 0.95


def paired_fid_bootstrap(
    methods: dict[str, np.ndarray], truth: np.ndarray, resamples: int = FID_BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict[str, np.ndarray]:
    """FID of each method against the truth on `resamples` bootstrap resamples of the images.

    Row i of every matrix is the same photo, so each resample draws photos with replacement
    and keeps each photo's outputs together with its truth: the spread of a method's values
    shows how much its FID depends on which photos happen to be in a small benchmark, and the
    difference of two methods on the same resamples whether their order is more than that.
    (Duplicated photos shrink the effective sample, so resampled FIDs sit above the full-set
    one: read intervals of differences, and the spread, not the level.)"""
    truth = np.asarray(truth, np.float64)
    generator = np.random.default_rng(seed)
    values = {name: np.empty(resamples) for name in methods}
    for resample in range(resamples):
        rows = generator.integers(0, len(truth), len(truth))
        if len(np.unique(rows)) < 2:
            rows = np.arange(len(truth))
        for name, features in methods.items():
            values[name][resample] = frechet_distance_of_features(np.asarray(features)[rows], truth[rows])
    return values


def percentile_interval(values: np.ndarray, coverage: float = FID_INTERVAL) -> tuple[float, float]:
    """The central `coverage` interval of bootstrap values (percentile method)."""
    tail = (1.0 - coverage) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


#: Spatial frequency (cycles per pixel) above which chroma power counts as high-frequency.
AB_HIGH_FREQUENCY_CUTOFF = 0.25


def image_ab(image: np.ndarray) -> np.ndarray:
    """(2, H, W) CIELAB a*, b* of an (H, W, 3) RGB image in 0..255."""
    import torch

    from .color import rgb_to_lab

    rgb = torch.from_numpy(_as_rgb255(image) / 255.0).permute(2, 0, 1)[None]
    return rgb_to_lab(rgb)[0, 1:].numpy()


def ab_high_frequency_share(image: np.ndarray, cutoff: float = AB_HIGH_FREQUENCY_CUTOFF) -> float:
    """Share of the CIELAB a/b spectral power (mean removed) at radial frequencies above
    `cutoff` cycles/pixel. Natural photos keep their chroma power at low frequencies; an
    upsampling checkerboard or colour noise shows up as a larger share (compare with the ground
    truth's at the same size). Returns 0 for an image without chroma variation."""
    ab = image_ab(image).transpose(1, 2, 0)
    ab = ab - ab.mean(axis=(0, 1))
    power = (np.abs(np.fft.fft2(ab, axes=(0, 1))) ** 2).sum(axis=2)
    fy = np.fft.fftfreq(ab.shape[0])[:, None]
    fx = np.fft.fftfreq(ab.shape[1])[None, :]
    radius = np.sqrt(fx**2 + fy**2)
    total = power.sum()
    return float(power[radius > cutoff].sum() / total) if total > 0 else 0.0


# --------------------------------------------------------------------------- LPIPS
#: torchvision's AlexNet weights, which `lpips.LPIPS(net="alex")` would otherwise download.
LPIPS_BACKBONE_FILE = "alexnet-owt-7be5be79.pth"


class LPIPSMetric:
    """LPIPS (AlexNet) distance of two RGB images in 0..255, when it can run without a download."""

    def __init__(self, model, device) -> None:
        self.model = model
        self.device = device

    @classmethod
    def load(cls, device) -> "LPIPSMetric | str":
        """The metric, or a one-line reason why LPIPS is unavailable."""
        try:
            import lpips
        except ImportError:
            return "LPIPS unavailable: the optional 'lpips' package is not installed (pip install lpips)"
        import torch

        backbone = Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILE
        if not backbone.is_file():
            # lpips fetches AlexNet through torchvision, which would download it: refuse instead.
            return f"LPIPS unavailable: AlexNet weights {backbone} are not on disk (gcpcolor never downloads)"
        try:
            model = lpips.LPIPS(net="alex", verbose=False).to(device).eval()
        except Exception as exc:  # its weights ship inside the package; a broken install lands here
            return f"LPIPS unavailable: {' '.join(str(exc).split()) or type(exc).__name__}"
        return cls(model, device)

    def __call__(self, reference: np.ndarray, test: np.ndarray) -> float:
        import torch

        def to_tensor(image: np.ndarray) -> torch.Tensor:
            tensor = torch.from_numpy(_as_rgb255(image)).float().permute(2, 0, 1)[None]
            return (tensor / 127.5 - 1.0).to(self.device)  # LPIPS expects [-1, 1]

        with torch.no_grad():
            return float(self.model(to_tensor(reference), to_tensor(test)).item())


__all__ = [
    "COLORFULNESS_VARIANTS",
    "ColorfulnessVariant",
    "DEFAULT_COLORFULNESS_VARIANT",
    "FeatureStatistics",
    "LPIPSMetric",
    "colorfulness",
    "colorfulness_all",
    "delta_colorfulness",
    "frechet_distance",
    "psnr",
    "ssim",
]
