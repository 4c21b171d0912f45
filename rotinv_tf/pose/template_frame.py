"""`TemplateFrame`: the canonical frame of a stack whose angles nobody knows, learned online by EM.

The frame is a polar template of the canonical particle, held by the model as non-trainable weights
and refined on every training step, as expectation-maximisation over in-plane angles and offsets
(`rotinv_tf.pose.polar_em`, the core classical alignment shares):

- E step: each particle's polar image P (`data_pipeline.polar`, where a rotation is a circular
  shift) is cross-correlated with each of the K templates T_k, moved by each offset of the search
  (`max_shift`, `shift_step`; none by default), along the angle axis (FFT); under white Gaussian
  noise of per-pixel variance σ² the posterior over (template, offset, angle bin) is
  `PolarEM.logits`' softmax (for K = 1 and no offsets, softmax(corr / σ²)).
- M step: stochastic EM on the sufficient statistics (`PolarEM.em_step` at rate `momentum`): each
  template's running posterior mass N_k and posterior-weighted sum of aligned particles (each
  re-centred by its posterior-mean offset) move towards the batch's, and T_k is their ratio (soft
  assignments, as RELION's 2D classification; hard ones oscillate at low SNR); σ² moves towards
  the posterior-weighted residual.

Each particle's offset (`OFFSET`, served) is its posterior-mean offset: the particle is its
template turned by θ, then moved by it (`data_pipeline.rotation`'s convention).

Several templates (`num_classes`, one per view of a stack that holds several) give each view its
own frame; a particle's class is its most probable template, and its frame angle θ the circular
mean of its posterior over that template's angles on a grid `ANGLE_UPSAMPLING` times finer than
the template's bins (the correlation interpolated band-limited, by zero-padding its spectrum): at
SNR 1 the posterior over 128 bins sits on one bin, so its mean would be quantised to 2.8° steps
(psi MAE 0.79° on poses.py's one-view stack, 0.49° on the finer grid; issue 15). θ is the
rotation with
`particle = rotate(canonical, θ)` (`data_pipeline.rotation`'s convention). The network learns to
predict θ from the particle (and θ + α from the particle rotated by α), so the frame generalises
to new particles; the template itself is only a training device. Which way the template points is
arbitrary: scores compare frames after one global rotation.

Correlations are weighted by each ring's area (r·Δr·Δφ), so they are the pixel inner products of
the image plane.

Per particle the frame also grades its assignment (`CLASS_OUTPUTS`, `assessment`), as RELION's 2D
classification does in its data STAR: the class probabilities; the assignment probability, its
class's probability times 1 - its flip probability: the probability that both its class and its
orientation are right (rlnMaxValueProbDistribution; ambiguous particles rank lowest); the log
marginal likelihood log Σ_{k,s} p(x | k, s) p(k) p(s) up to a constant shared by all particles
(rlnLogLikeliContribution: low = junk, or a particle that fits no template well); and the flip
probability, the posterior mass, within its class, within ±`FLIP_WINDOW_DEGREES` of its best angle
+ 180°. A template close to its own 180° turn gives its particles two nearly equal angles; about
half of them then take the wrong one (issue 30: psi MAE 66.7°, median 2.7°, on one view of a
five-conformation stack), and their flip probability rises towards 0.5. It is taken about the
posterior's mode, not its circular mean, since the mean of two equal peaks 180° apart points
nowhere in particular. Two things make it trustworthy (issue 30, relion_project's near-symmetric
view: 17 particles flipped, the grades summed to 0.8 and ranked them anywhere in their class):
- offsets: a template whose centre is not the rotation centre fits its 180° turn best at another
  offset (moved by twice the distance, ~1 px for RELION's N/2-centred boxes); at the one offset
  the E step keeps per class, the turn looked far worse than it is. The flip probability sums the
  posterior over offsets on a lattice of `FLIP_SHIFT_STEP` within `FLIP_SHIFT_REACH` of the
  particle's served offset (a 1-px lattice is too coarse: at SNR 1 a fraction of a pixel costs
  more than the two turns differ by); with that alone, the 17 came among the 76 highest flip
  probabilities of their class's 500, summing to 2.3;
- σ²: the EM's σ² is measured on the polar grid, whose bilinear samples of white noise have less
  of its variance (on average (2/3)² = 4/9; 2.27x less there, measured), as has a particle moved by
  interpolation; each particle's residual over the disc's pixels as observed, against its
  template moved and turned onto it, is the noise variance of its flip probability.
With both (benchmarks/results/classes_flip.md): the flip probabilities sum to 10.2 for the
17 flipped, all 17 among the stack's lowest tenth by assignment probability (seed 1: 12.0, 18
of 18).

`images()` turns the templates back into images (bilinear in radius and angle), so a served
learned frame hands each particle its class's template as the reference that
`rotinv_tf.pose.refine` searches against: the mean of all the class's particles, a better reference
than one decoded image (issue 15).
"""
import keras
import numpy as np
import tensorflow as tf

from data_pipeline.rotation import inscribed_disc, rotate, translate
from rotinv_tf.pose.classical import align_reference_free, coaligned
from rotinv_tf.pose.polar_em import (MAX_SHIFT_SHARE, MIN_NOISE_VARIANCE, EMState, PolarEM, posterior,
                                     shift_problems)

_INITIAL_ROUNDS = 8  # batch EM rounds on the first training batch (`TemplateFrame._initialize`)
ANGLE_UPSAMPLING = 4  # frame angles' grid per template angle bin (module docstring)
FLIP_WINDOW_DEGREES = 45.0  # half-width of the window about the best angle + 180° (docstring)
# The flip probability's offsets (module docstring): a lattice this fine (pixels), this far from
# each particle's served offset (at most `MAX_SHIFT_SHARE` of the box).
FLIP_SHIFT_STEP = 0.25
FLIP_SHIFT_REACH = 2.0
# A template whose correlation with its own 180° turn exceeds this is near-symmetric: its
# particles may sit in either orientation (`break_symmetry`, canonicalize's comment lines).
NEAR_SYMMETRIC = 0.9
# `break_symmetry`: principal axes tried, and the excess kurtosis below which projections count
# as the two orientations' bimodal mix (two well-separated clusters: down to -2; noise: 0).
SPLIT_CANDIDATES = 5
BIMODAL_KURTOSIS = -0.5
# What `assessment` grades each particle by (module docstring), the names a SavedModel serves.
CLASS_OUTPUTS = ("class_probabilities", "assignment_probability", "log_likelihood",
                 "flip_probability")
# Each particle's offset [B, 2], pixels (`data_pipeline.rotation`), served by a frame that
# searches offsets (a frame without takes its particles as centred: no offsets to write).
OFFSET = "offset"
_CHUNK = 256  # particles per correlation in `start_classical`


def problems(num_angles: int, momentum: float, num_classes: int, max_shift: float = 0.0,
             shift_step: float = 1.0) -> list[str]:
    """What makes these settings unusable for a `TemplateFrame` (the config checks them with
    this before a run starts; the constructor refuses them)."""
    found = []
    if num_angles < 8 or num_angles % 4:
        found.append(f"frame_angles must be a multiple of 4 >= 8, got {num_angles}")
    if not 0.0 < momentum <= 1.0:
        found.append(f"frame_momentum must be in (0, 1], got {momentum}")
    if num_classes < 1:
        found.append(f"frame_classes must be >= 1, got {num_classes}")
    return found + shift_problems(max_shift, shift_step)


class TemplateFrame(keras.layers.Layer):
    """The online-EM frame: `assign(images)` -> (angles, classes); `update(...)` the EM step."""

    def __init__(self, image_size: int, num_angles: int = 128, momentum: float = 0.1,
                 num_classes: int = 1, max_shift: float = 0.0, shift_step: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        found = problems(num_angles, momentum, num_classes, max_shift, shift_step)
        if found:
            raise ValueError("; ".join(found))
        self.image_size = image_size
        self.num_angles = num_angles
        self.momentum = momentum
        self.num_classes = num_classes
        # The offset search, limited to what the box allows (`polar_em.MAX_SHIFT_SHARE`).
        self.max_shift = min(float(max_shift), MAX_SHIFT_SHARE * image_size)
        self.shift_step = shift_step
        # The EM core on the polar grid (radii from 1 px).
        self.em = PolarEM(image_size, num_angles, 1.0, self.max_shift, shift_step)
        # The flip probability's finer offsets about each particle's own (module docstring), and
        # the disc its pixels' residual is taken over (where every moved template has pixels).
        self.local = PolarEM(image_size, num_angles, 1.0,
                             min(FLIP_SHIFT_REACH, MAX_SHIFT_SHARE * image_size), FLIP_SHIFT_STEP)
        self._disc = tf.constant(inscribed_disc(
            image_size, self.em.resampler.radii[-1] - self.local.max_shift - 1.0), tf.float32)
        fine = num_angles * ANGLE_UPSAMPLING
        phi = 2 * np.pi * np.arange(fine) / fine
        self._cos, self._sin = tf.constant(np.cos(phi), tf.float32), tf.constant(np.sin(phi),
                                                                                  tf.float32)
        shape = (num_classes, len(self.em.resampler.radii), num_angles)
        self.template = self.add_weight(shape=shape, initializer="zeros", trainable=False,
                                        name="template")
        self.class_mass = self.add_weight(shape=(num_classes,), initializer="ones",
                                          trainable=False, name="class_mass")
        self.noise_variance = self.add_weight(shape=(), initializer="ones", trainable=False,
                                              name="noise_variance")
        self.initialized = self.add_weight(shape=(), initializer="zeros", trainable=False,
                                           name="initialized")

    @property
    def state(self) -> EMState:
        """The EM state the weights hold."""
        return EMState(tf.convert_to_tensor(self.template),
                       tf.convert_to_tensor(self.class_mass),
                       tf.convert_to_tensor(self.noise_variance))

    def _hold(self, state: EMState) -> None:
        self.template.assign(state.templates)
        self.class_mass.assign(state.class_mass)
        self.noise_variance.assign(state.noise)

    def polar(self, images: tf.Tensor) -> tf.Tensor:
        """Images [B, N, N, 1] -> polar images [B, R, A] (float32)."""
        return self.em.polar(images)

    def _scores(self, spectra: tf.Tensor) -> dict[str, tf.Tensor]:
        """The E step's scores of particles (their spectra [B, R, F]): on the templates' angle
        bins, `correlation` and `logits` (log p(x, k, s, a)) [B, K, S, A] and the moved templates'
        `energy` [K, S]; `fine`, the logits [B, K, U·A] on a grid U = `ANGLE_UPSAMPLING` times
        finer in angle at each class's most probable offset (`PolarEM.fine_logits`), what the
        frame angles and grades come from."""
        references, energy = self.em.references(self.template)
        spectrum = self.em.correlation_spectra(spectra, references)
        correlation = self.em.angular(spectrum)
        logits = self.em.logits(correlation, energy, self.state)
        return {"spectrum": spectrum, "correlation": correlation, "logits": logits,
                "energy": energy, "fine": self.em.fine_logits(spectrum, logits, energy, self.state,
                                            ANGLE_UPSAMPLING)}

    def _offsets(self, scores: dict[str, tf.Tensor], weights: tf.Tensor) -> tf.Tensor:
        """Each particle's offset [B, 2] (`PolarEM.peak_offsets` in its class, at its frame
        angle) from `_scores` and the fine posterior `weights` [B, K, U·A]."""
        angles, classes = self.angles(weights)
        return self.em.peak_offsets(scores["spectrum"], scores["energy"], self.state, classes,
                                    angles)

    def angles(self, weights: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Posterior weights on the fine grid [B, K, U·A] -> (circular mean angle [B] (radians,
        (-π, π]) within each particle's most probable class and the half circle about its mode,
        that class [B] int32). The half circle: for a view close to its own 180° turn the
        posterior has two equal peaks, and the mean over the whole circle points between them
        (class averages of such a view were smeared, issue 30); about one peak it is that peak."""
        classes = tf.argmax(tf.reduce_sum(weights, axis=2), axis=1, output_type=tf.int32)
        within = tf.gather(weights, classes, batch_dims=1)  # [B, A]
        within = tf.where(self._distance_from(within, 0) < self.num_angles * ANGLE_UPSAMPLING // 4,
                          within, 0.0)
        angle = tf.atan2(tf.reduce_sum(within * self._sin, axis=-1),
                         tf.reduce_sum(within * self._cos, axis=-1))
        return angle, classes

    def _distance_from(self, within: tf.Tensor, turn: int) -> tf.Tensor:
        """Fine-grid posteriors [B, U·A] -> each bin's circular distance in bins from the mode
        moved by `turn` bins, [B, U·A] int32."""
        cells = self.num_angles * ANGLE_UPSAMPLING
        centre = tf.argmax(within, axis=1, output_type=tf.int32) + turn
        offset = (tf.range(cells)[None] - centre[:, None]) % cells
        return tf.minimum(offset, cells - offset)

    def posterior(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(posterior weights over (class, fine angle) [B, K, U·A] at each class's most probable
        offset; the offsets [B, 2] in pixels, `OFFSET`) of normalised images [B, N, N, 1] (E
        step only)."""
        scores = self._scores(self.em.spectra(self.polar(images)))
        weights = posterior(scores["fine"])
        return weights, self._offsets(scores, weights)

    def assessment(self, images: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        """(posterior weights [B, K, U·A], `CLASS_OUTPUTS` and, with an offset search, `OFFSET`
        by name) of normalised images [B, N, N, 1] (module docstring): class probabilities
        [B, K], offsets [B, 2], the others [B]."""
        spectra = self.em.spectra(self.polar(images))
        scores = self._scores(spectra)
        weights = posterior(scores["fine"])
        cells = self.num_angles * ANGLE_UPSAMPLING  # the uniform angle prior p(s) = 1 / cells
        noise = tf.maximum(self.noise_variance, MIN_NOISE_VARIANCE)
        log_likelihood = (tf.reduce_logsumexp(scores["fine"], axis=[1, 2])
                          - float(np.log(cells)) - self.em.energy(spectra) / (2.0 * noise))
        mass = tf.reduce_sum(weights, axis=2)
        probabilities = mass / tf.reduce_sum(mass, axis=1, keepdims=True)
        classes = tf.argmax(mass, axis=1, output_type=tf.int32)
        offsets = self._offsets(scores, weights) if self.max_shift else None
        flip = self._flip_probability(images, classes, offsets)
        grades = {
            "class_probabilities": probabilities,
            "assignment_probability": tf.reduce_max(probabilities, axis=1) * (1.0 - flip),
            "log_likelihood": log_likelihood,
            "flip_probability": flip}
        if offsets is not None:
            grades[OFFSET] = offsets
        return weights, grades

    def _flip_probability(self, images: tf.Tensor, classes: tf.Tensor,
                          offsets: tf.Tensor | None) -> tf.Tensor:
        """Normalised images [B, N, N, 1], their classes [B] and served offsets [B, 2] (None:
        centred) -> the share of each one's posterior over angles in its class, summed over the
        `local` offsets about its own and under its own pixels' noise variance (module
        docstring), within ±`FLIP_WINDOW_DEGREES` of its mode + 180°, [B]."""
        moved = images if offsets is None else self.em.recentred(images, offsets)
        spectra = self.local.spectra(self.local.polar(moved))
        references, energy = self.local.references(self.template)
        spectrum = tf.gather(self.local.correlation_spectra(spectra, references), classes,
                             batch_dims=1)  # [B, S, F]
        correlation = self.local.angular(spectrum, ANGLE_UPSAMPLING)  # [B, S, U·A]
        fit = 2.0 * correlation - tf.gather(energy, classes)[..., tf.newaxis]
        # σ²: the mean squared residual over the disc's pixels at the best (offset, angle), the
        # template moved onto the particle as observed (a particle moved by interpolation has
        # smoothed noise: 0.4x the variance on relion_project's stack).
        cells = self.num_angles * ANGLE_UPSAMPLING
        best = tf.argmax(tf.reshape(fit, [tf.shape(fit)[0], -1]), axis=1, output_type=tf.int32)
        model = self._observed_templates(classes, tf.gather(self.local.offsets, best // cells),
                                         2.0 * np.pi * tf.cast(best % cells, tf.float32) / cells,
                                         offsets)
        noise = tf.maximum(tf.reduce_sum(tf.square(images - model)[..., 0] * self._disc,
                                         axis=[1, 2]) / tf.reduce_sum(self._disc),
                           MIN_NOISE_VARIANCE)
        within = posterior(tf.reduce_logsumexp(fit / (2.0 * noise[:, None, None]), axis=1))
        window = (tf.cast(self._distance_from(within, cells // 2), tf.float32)
                  <= FLIP_WINDOW_DEGREES / 360.0 * cells)
        return tf.reduce_sum(tf.where(window, within, 0.0), axis=1)

    def _observed_templates(self, classes: tf.Tensor, shifts: tf.Tensor, angles: tf.Tensor,
                            offsets: tf.Tensor | None) -> tf.Tensor:
        """Each particle's class template (`classes` [B]) as an image, moved by `shifts` [B, 2],
        turned by `angles` [B] about its background (its outermost ring's mean) and moved by
        `offsets` [B, 2] (None: not), the background filling what comes in: the particle
        without its noise, [B, N, N, 1]."""
        edge = tf.gather(tf.reduce_mean(self.template[:, -1], axis=1), classes)
        level = edge[:, None, None, None]
        moved = translate(tf.gather(self.images(), classes), shifts, edge, xla_compatible=True)
        turned = rotate(moved - level, angles, xla_compatible=True) + level
        return turned if offsets is None else translate(turned, offsets, edge,
                                                        xla_compatible=True)

    def break_symmetry(self, images: tf.Tensor, rounds: int = 20) -> dict[int, float]:
        """After training: a class whose template is close to its own 180° turn (correlation
        > `NEAR_SYMMETRIC`), because its particles took both of its orientations and EM averaged
        them into a blur, is split by orientation and its template made the mean of its
        particles in one orientation; the posterior with it then tells a particle's orientation
        (issue 30: 246 of a near-symmetric view's 500 particles were 180° off). Normalised
        `images` [B, N, N, 1]; returns {class: share of its particles turned}.

        Each particle of such a class is turned into the frame at its best template angle bin.
        The antisymmetric parts D = P - turn(P, 180°) of particles in the two orientations are
        ±(V - turn(V)) plus noise: along that axis their projections are bimodal, so of the
        first `SPLIT_CANDIDATES` principal axes of the centred D the one whose projections have
        the lowest excess kurtosis (below `BIMODAL_KURTOSIS`, else the class is left as it is)
        splits them by its sign, refined by `rounds` of: the axis the mean of the split-signed
        D, the split by the sign along it. The majority keeps its orientation."""
        weights, offsets = self.posterior(images)
        polar = self.polar(self.em.recentred(images, offsets))
        classes = tf.argmax(tf.reduce_sum(weights, axis=2), axis=1, output_type=tf.int32)
        best = tf.argmax(tf.gather(weights, classes, batch_dims=1), axis=1, output_type=tf.int32)
        shift = tf.cast(tf.round(tf.cast(best, tf.float32) / ANGLE_UPSAMPLING), tf.int32)
        index = (tf.range(self.num_angles)[None] + shift[:, None]) % self.num_angles
        aligned = tf.gather(polar, index, axis=2, batch_dims=1).numpy()  # P_b(r, a + s_b)
        half = self.num_angles // 2
        area = self.em.area.numpy()[:, None]
        classes = classes.numpy()
        templates = self.template.numpy()
        turned = {}
        for k in range(self.num_classes):
            mine = aligned[classes == k]
            if len(mine) < 2 * SPLIT_CANDIDATES or self.turn_correlation(k) <= NEAR_SYMMETRIC:
                continue
            flat = ((mine - np.roll(mine, half, axis=2)) * np.sqrt(area)).reshape(len(mine), -1)
            flat -= flat.mean(axis=0)
            axes = np.linalg.svd(flat, full_matrices=False)[2][:SPLIT_CANDIDATES]
            projections = flat @ axes.T
            standard = (projections - projections.mean(0)) / projections.std(0)
            kurtosis = (standard**4).mean(0) - 3.0
            if kurtosis.min() > BIMODAL_KURTOSIS:
                continue
            flip = projections[:, int(np.argmin(kurtosis))] < 0
            for _ in range(rounds):
                again = flat @ np.where(flip[:, None], -flat, flat).mean(0) < 0
                if np.array_equal(again, flip):
                    break
                flip = again
            if flip.mean() > 0.5:
                flip = ~flip
            templates[k] = np.where(flip[:, None, None], np.roll(mine, half, axis=2),
                                    mine).mean(0)
            turned[k] = float(flip.mean())
        self.template.assign(templates)
        return turned

    def turn_correlation(self, k: int) -> float:
        """Pearson correlation, area-weighted over the disc, of template `k` with its own 180°
        turn: 1 for a template symmetric under it."""
        template = self.template.numpy()[k]
        turned = np.roll(template, self.num_angles // 2, axis=1)
        weights = np.broadcast_to(self.em.area.numpy()[:, None], template.shape)
        a = template - np.average(template, weights=weights)
        b = turned - np.average(turned, weights=weights)
        denominator = np.sqrt((weights * a * a).sum() * (weights * b * b).sum())
        return float((weights * a * b).sum() / denominator) if denominator > 0 else 1.0

    def assign(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(frame angles [B], classes [B]) of normalised images [B, N, N, 1] (E step only)."""
        return self.angles(self.posterior(images)[0])

    def images(self) -> tf.Tensor:
        """The templates as images [K, N, N, 1] (float32, the frame's units), resampled back from
        the polar grid (`PolarResampler.to_image`)."""
        return self.em.resampler.to_image(self.template)

    def _initialize(self, images: tf.Tensor, seed: keras.random.SeedGenerator) -> None:
        """First batch: each template starts as the mean of the particles given it at random,
        turned by random angle bins, with σ² their pixel variance, so the first posteriors are
        soft and symmetry breaks gently. With several templates, then `_INITIAL_ROUNDS` rounds of
        batch EM on this batch: online steps from the random start can let one template take
        every particle (seen with two views: class masses 0.998 / 0.002), batch EM rounds first
        let the templates part. (One template needs none: benchmarks/results/learned_frame.md.)"""
        cells = keras.random.randint([tf.shape(images)[0]], 0,
                                     self.num_classes * self.num_angles, seed=seed)
        self._hold(self.em.start(images, cells // self.num_angles, cells % self.num_angles,
                                 self.num_classes))
        for _ in range(_INITIAL_ROUNDS if self.num_classes > 1 else 0):
            self._hold(self.em.em_step(self.state, self.em.statistics(images, self.state)[0],
                                       1.0))
        self.initialized.assign(1.0)

    def start_classical(self, images: tf.Tensor, seed: int = 0) -> None:
        """Starts the templates from classical reference-free alignment of `images` [B, N, N, 1]
        (normalised, as the frame sees them; the frame's offset search): its class averages (K
        classes, its restarts keeping the smallest residual) and class masses, σ² their mean
        per-pixel residual at each particle's best (template, offset, angle). Random starts of
        online EM on one batch were seen to leave the views unseparated (class ARI vs view
        0.23-0.44 on poses.py's three-view stack, one template empty; issue 15), where classical
        K=3 EM on a few thousand particles, with restarts, reaches ~0.7. The class averages are
        first turned into one frame (`coaligned`): the views of a specimen look alike and EM
        splits some across classes, so in unrelated frames a split view's particles got two
        angles (psi MAE 33° or 8° by training seed)."""
        # With an offset search every angle costs the search's offsets: on the frame's own bins
        # (not classical's 360) it ran 2.4x faster and kept its accuracy (1,000 simulated 48-px
        # particles at SNR 0.1, offsets to 4 px: psi MAE 1.70° vs 1.65°, offsets 0.45 vs 0.44
        # px RMS).
        angles = {"num_angles": self.num_angles} if self.max_shift else {}
        alignment = coaligned(align_reference_free(images, num_classes=self.num_classes,
                                                   seed=seed, max_shift=self.max_shift,
                                                   shift_step=self.shift_step, **angles))
        self.template.assign(self.polar(alignment.templates[..., None]))
        self.class_mass.assign(tf.reduce_mean(alignment.class_probabilities, axis=0))
        references, energy = self.em.references(self.template)
        residual = []
        for start in range(0, int(images.shape[0]), _CHUNK):
            spectra = self.em.spectra(self.polar(images[start:start + _CHUNK]))
            correlation = self.em.correlation(spectra, references)
            fit = tf.reduce_max(2.0 * correlation - energy[..., None], axis=[1, 2, 3])
            residual.append(self.em.energy(spectra) - fit)
        self.noise_variance.assign(tf.maximum(tf.reduce_mean(tf.concat(residual, 0)), 1e-6)
                                   / self.em.disc_area)
        self.initialized.assign(1.0)

    def update(self, images: tf.Tensor, seed: keras.random.SeedGenerator
               ) -> tuple[tf.Tensor, tf.Tensor]:
        """One EM step on a training batch; returns its frame angles [B] and offsets [B, 2]
        (before the update)."""
        tf.cond(self.initialized > 0, lambda: None, lambda: self._initialize(images, seed))
        spectra = self.em.spectra(self.polar(images))  # once: the E and the M step use it
        scores = self._scores(spectra)
        weights = posterior(scores["fine"])
        angles, offsets = self.angles(weights)[0], self._offsets(scores, weights)
        statistics = self.em.statistics_of(images, spectra, scores["correlation"],
                                           scores["energy"], self.state)[0]
        self._hold(self.em.em_step(self.state, statistics, self.momentum))
        return angles, offsets

    def get_config(self) -> dict:
        return {**super().get_config(), "image_size": self.image_size,
                "num_angles": self.num_angles, "momentum": self.momentum,
                "num_classes": self.num_classes, "max_shift": self.max_shift,
                "shift_step": self.shift_step}
