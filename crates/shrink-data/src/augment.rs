//! Training-time augmentation of image batches: a random shift (translation
//! by up to `shift` pixels each way, the uncovered border filled with the
//! dataset's background) and a
//! random horizontal flip, drawn per sample from a [`SplitMix64`].
//!
//! Written here rather than taken from a crate: it is two loops over a
//! `[N, C, H, W]` buffer, and it must draw from the crate's one seeded PRNG so
//! a training run stays reproducible from its seed.

use serde::Deserialize;

use crate::dataset::Batch;
use crate::error::DataError;
use crate::rng::SplitMix64;

/// What to do to each training image (`[stage.finetune] augment = { shift = 2, flip = true }`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Augment {
    /// Translate by a whole number of pixels drawn uniformly from
    /// `-shift..=shift`, rows and columns independently; 0 leaves the image in
    /// place. The border that moves in is the dataset's background: what a
    /// black pixel becomes after the preprocessing ([`crate::Dataset::background`]).
    pub shift: usize,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl Augment {
    /// Whether this changes nothing.
    pub fn is_identity(&self) -> bool {
        self.shift == 0 && !self.flip
    }

    /// Augments every sample of `batch` in place, filling uncovered pixels of
    /// channel `c` with `fill[c]` (0 where `fill` has no value). The batch
    /// must be images, `[N, C, H, W]`; a shift must be smaller than the image.
    pub fn apply(&self, batch: &mut Batch, fill: &[f32], rng: &mut SplitMix64) -> Result<(), DataError> {
        if self.is_identity() {
            return Ok(());
        }
        let &[n, c, h, w] = &batch.shape[..] else {
            return Err(DataError::Augment {
                field: "finetune.augment",
                reason: format!(
                    "needs image batches [N, C, H, W]; this model takes {:?} (flat samples cannot be shifted or flipped)",
                    batch.shape
                ),
            });
        };
        if self.shift >= h || self.shift >= w {
            return Err(DataError::Augment {
                field: "finetune.augment.shift",
                reason: format!("{} pixels is not less than the {h}x{w} image", self.shift),
            });
        }
        let plane = h * w;
        let mut tmp = vec![0.0f32; plane];
        let span = 2 * self.shift as u64 + 1;
        for sample in batch.inputs.chunks_exact_mut(c * plane).take(n) {
            // Draw in a fixed order whatever the settings, per sample.
            let dy = rng.below(span) as isize - self.shift as isize;
            let dx = rng.below(span) as isize - self.shift as isize;
            let flip = self.flip && rng.below(2) == 1;
            for (c, ch) in sample.chunks_exact_mut(plane).enumerate() {
                let bg = fill.get(c).copied().unwrap_or(0.0);
                tmp.copy_from_slice(ch);
                for y in 0..h {
                    let sy = y as isize - dy;
                    let row = &mut ch[y * w..(y + 1) * w];
                    if sy < 0 || sy >= h as isize {
                        row.fill(bg);
                        continue;
                    }
                    let src = &tmp[sy as usize * w..(sy as usize + 1) * w];
                    for (x, out) in row.iter_mut().enumerate() {
                        // Output column x shows the flipped, then shifted, source.
                        let xs = x as isize - dx;
                        *out = if xs < 0 || xs >= w as isize {
                            bg
                        } else if flip {
                            src[w - 1 - xs as usize]
                        } else {
                            src[xs as usize]
                        };
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize, c: usize, h: usize, w: usize) -> Batch {
        let inputs = (0..n * c * h * w).map(|i| i as f32 + 1.0).collect();
        Batch { inputs, shape: vec![n, c, h, w], labels: vec![0; n] }
    }

    #[test]
    fn identity_changes_nothing() {
        let mut b = batch(3, 2, 4, 5);
        let before = b.clone();
        Augment::default().apply(&mut b, &[], &mut SplitMix64::new(1)).unwrap();
        assert_eq!(b, before);
    }

    #[test]
    fn each_sample_is_a_shift_or_mirror_of_itself_with_the_background_border() {
        let aug = Augment { shift: 2, flip: true };
        let (n, c, h, w) = (64, 2, 6, 7);
        let orig = batch(n, c, h, w);
        let mut b = orig.clone();
        aug.apply(&mut b, &[-0.5, 0.25], &mut SplitMix64::new(7)).unwrap();
        let (mut moved, mut flipped) = (0, 0);
        for s in 0..n {
            let at = |v: &[f32], ch: usize, y: usize, x: usize| v[((s * c + ch) * h + y) * w + x];
            // Find the (dy, dx, flip) that explains channel 0, then require it for every pixel of every channel.
            let found = (-2isize..=2)
                .flat_map(|dy| (-2isize..=2).flat_map(move |dx| [(dy, dx, false), (dy, dx, true)]))
                .find(|&(dy, dx, f)| {
                    (0..c).all(|ch| {
                        (0..h).all(|y| {
                            (0..w).all(|x| {
                                let (sy, xs) = (y as isize - dy, x as isize - dx);
                                let want = if sy < 0 || sy >= h as isize || xs < 0 || xs >= w as isize {
                                    [-0.5, 0.25][ch]
                                } else {
                                    let sx = if f { w - 1 - xs as usize } else { xs as usize };
                                    at(&orig.inputs, ch, sy as usize, sx)
                                };
                                at(&b.inputs, ch, y, x) == want
                            })
                        })
                    })
                });
            let (dy, dx, f) = found.unwrap_or_else(|| panic!("sample {s} is no shift or mirror of itself"));
            moved += usize::from(dy != 0 || dx != 0);
            flipped += usize::from(f);
        }
        // 64 samples: all-unmoved or never/always flipped would mean the draws are broken.
        assert!(moved > 40, "{moved} of {n} samples moved");
        assert!((16..=48).contains(&flipped), "{flipped} of {n} samples flipped");
    }

    #[test]
    fn same_seed_same_batch() {
        let aug = Augment { shift: 1, flip: true };
        let (mut a, mut b) = (batch(8, 1, 5, 5), batch(8, 1, 5, 5));
        aug.apply(&mut a, &[], &mut SplitMix64::new(3)).unwrap();
        aug.apply(&mut b, &[], &mut SplitMix64::new(3)).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn flat_batches_and_oversized_shifts_are_errors() {
        let mut flat = Batch { inputs: vec![0.0; 8], shape: vec![2, 4], labels: vec![0, 1] };
        let e = Augment { shift: 1, flip: false }.apply(&mut flat, &[], &mut SplitMix64::new(0)).unwrap_err();
        assert!(e.to_string().contains("augment") && e.to_string().contains("[2, 4]"), "{e}");
        let mut b = batch(1, 1, 3, 3);
        let e = Augment { shift: 3, flip: false }.apply(&mut b, &[], &mut SplitMix64::new(0)).unwrap_err();
        assert!(e.to_string().contains("augment.shift"), "{e}");
    }
}
