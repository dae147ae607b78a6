//! Preprocessing as a pipeline declares it: scale, normalise, lay out.
//!
//! Each value becomes `(raw / 255 - mean[c]) / std[c]` (without `/ 255` when
//! `scale` is off), computed in `f32` in that order, the way torchvision's
//! `ToTensor` + `Normalize` do, so that a model trained in Python sees the
//! same numbers here.

use serde::Deserialize;

use crate::DataError;

/// How raw samples become network inputs. Read from a pipeline's TOML, e.g.
///
/// ```toml
/// [data.preprocess]
/// scale = true
/// mean = [0.1307]
/// std = [0.3081]
/// layout = "flat"
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Preprocess {
    /// Divide raw values by 255, so that u8 pixels land in [0, 1]. Default
    /// `true`; turn it off for float data that is already scaled.
    pub scale: bool,
    /// Subtracted after scaling: empty (the default, nothing subtracted), one
    /// value for every channel, or one value per channel.
    pub mean: Vec<f32>,
    /// Divided by after the mean: empty (the default, 1), one value for every
    /// channel, or one per channel. Each must be finite and positive.
    pub std: Vec<f32>,
    /// `"nchw"` (the default): each sample keeps its `[C, H, W]` shape (a
    /// grey 28x28 image is `[1, 28, 28]`); `"flat"`: each sample is one
    /// vector (`[N, 784]` batches, for MLPs).
    pub layout: Layout,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess { scale: true, mean: Vec::new(), std: Vec::new(), layout: Layout::Nchw }
    }
}

/// The shape of one sample in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Keep the stored sample shape, channels first: `[N, C, H, W]` batches.
    #[default]
    Nchw,
    /// Flatten each sample: `[N, C*H*W]` batches.
    Flat,
}

impl Layout {
    /// The layout that gives samples of a model's input shape (without the
    /// batch): one dimension (`[784]`) is flat, anything else channels first.
    pub fn for_sample(sample: &[usize]) -> Layout {
        if sample.len() == 1 { Layout::Flat } else { Layout::Nchw }
    }
}

/// A [`Preprocess`] resolved against a sample shape: one `(div, mean, std)` per channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    pub div: f32,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Preprocess {
    /// Checks the parameters against `channels` and expands them to one value per channel.
    pub(crate) fn plan(&self, channels: usize) -> Result<Plan, DataError> {
        let expand = |field: &'static str, v: &[f32], default: f32| -> Result<Vec<f32>, DataError> {
            match v.len() {
                0 => Ok(vec![default; channels]),
                1 => Ok(vec![v[0]; channels]),
                n if n == channels => Ok(v.to_vec()),
                n => Err(DataError::Preprocess {
                    field,
                    reason: format!("{n} values for {channels} channel(s): give one value, or one per channel"),
                }),
            }
        };
        let mean = expand("mean", &self.mean, 0.0)?;
        let std = expand("std", &self.std, 1.0)?;
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::Preprocess { field: "mean", reason: format!("{m} is not finite") });
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::Preprocess { field: "std", reason: format!("{s} is not a finite positive number") });
        }
        Ok(Plan { div: if self.scale { 255.0 } else { 1.0 }, mean, std })
    }
}

impl Plan {
    /// What a raw 0 becomes in each channel.
    /// The [`Preprocess`] this plan came from, with its values expanded to
    /// one per channel.
    pub(crate) fn preprocess(&self, flat: bool) -> Preprocess {
        Preprocess {
            scale: self.div != 1.0,
            mean: self.mean.clone(),
            std: self.std.clone(),
            layout: if flat { Layout::Flat } else { Layout::Nchw },
        }
    }

    pub(crate) fn background(&self) -> Vec<f32> {
        self.mean.iter().zip(&self.std).map(|(m, s)| -m / s).collect()
    }

    /// Writes one channel's values.
    #[inline]
    pub(crate) fn apply<T: Copy + Into<f32>>(&self, c: usize, src: &[T], dst: &mut [f32]) {
        let (div, mean, std) = (self.div, self.mean[c], self.std[c]);
        for (o, &x) in dst.iter_mut().zip(src) {
            *o = (x.into() / div - mean) / std;
        }
    }
}
