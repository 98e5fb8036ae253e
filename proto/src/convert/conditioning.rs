//! `Conditioning` and the `EncodeText` messages: prompts plus, for models with a text encoder,
//! their embeddings as exact f32 bits. Embeddings from the wire are checked (shape, length,
//! finiteness) before any worker conditions on them.

use super::{invalid, nest, required, to_u32, to_usize};
use crate::pb;
use crate::wire;
use longshot_core::api::{ApiError, EncodeTextRequest, EncodedConditioning};
use longshot_core::denoiser::{Conditioning, TextEmbeddings};
use longshot_core::inputs::{ImageEmbeddings, ReferenceImages};

impl From<Conditioning> for pb::Conditioning {
    fn from(c: Conditioning) -> Self {
        let (prompt_embedding, negative_embedding, embedding_shape) = match c.embeddings {
            Some(e) => (
                wire::encode_f32_le(&e.prompt),
                wire::encode_f32_le(&e.negative),
                vec![to_u32(e.rows), to_u32(e.dim)],
            ),
            None => Default::default(),
        };
        let (image_embedding, image_embedding_shape) = match c.image_embeddings {
            Some(e) => (wire::encode_f32_le(&e.data), vec![to_u32(e.rows), to_u32(e.dim)]),
            None => Default::default(),
        };
        pb::Conditioning {
            prompt: c.prompt,
            negative_prompt: c.negative_prompt,
            prompt_embedding,
            negative_embedding,
            embedding_shape,
            reference: c.reference.map(Into::into),
            image_embedding,
            image_embedding_shape,
        }
    }
}

/// `[rows, dim]` from a shape field.
fn shape2(shape: &[u32], field: &str) -> Result<(usize, usize), ApiError> {
    let [rows, dim] = shape[..] else {
        return Err(invalid(
            field,
            format!("{shape:?} has {} dimensions, expected 2 ([rows, dim])", shape.len()),
        ));
    };
    Ok((to_usize(rows, field)?, to_usize(dim, field)?))
}

fn decode(bytes: &[u8], field: &str) -> Result<Vec<f32>, ApiError> {
    wire::decode_f32_le(bytes).map_err(|e| invalid(field, e.to_string()))
}

impl TryFrom<pb::Conditioning> for Conditioning {
    type Error = ApiError;

    fn try_from(c: pb::Conditioning) -> Result<Self, ApiError> {
        let embeddings = if c.embedding_shape.is_empty() {
            if !c.prompt_embedding.is_empty() || !c.negative_embedding.is_empty() {
                return Err(invalid(
                    "embedding_shape",
                    "is empty but embeddings were sent: give [rows, dim]",
                ));
            }
            None
        } else {
            let (rows, dim) = shape2(&c.embedding_shape, "embedding_shape")?;
            let e = TextEmbeddings {
                rows,
                dim,
                prompt: decode(&c.prompt_embedding, "prompt_embedding")?,
                negative: decode(&c.negative_embedding, "negative_embedding")?,
            };
            e.validate().map_err(|m| invalid("embeddings", m))?;
            Some(e)
        };
        let image_embeddings = if c.image_embedding_shape.is_empty() {
            if !c.image_embedding.is_empty() {
                return Err(invalid(
                    "image_embedding_shape",
                    "is empty but an image embedding was sent: give [rows, dim]",
                ));
            }
            None
        } else {
            let (rows, dim) = shape2(&c.image_embedding_shape, "image_embedding_shape")?;
            let e = ImageEmbeddings {
                rows,
                dim,
                data: decode(&c.image_embedding, "image_embedding")?,
            };
            e.validate().map_err(|m| invalid("image_embedding", m))?;
            Some(e)
        };
        let reference = c
            .reference
            .map(ReferenceImages::try_from)
            .transpose()
            .map_err(|e| nest("reference", e))?;
        Ok(Conditioning {
            blend: None,
            prompt: c.prompt,
            negative_prompt: c.negative_prompt,
            embeddings,
            reference,
            image_embeddings,
        })
    }
}

impl From<ReferenceImages> for pb::ReferenceImages {
    fn from(r: ReferenceImages) -> Self {
        pb::ReferenceImages {
            width: r.width,
            height: r.height,
            first: r.first.into(),
            last: r.last.unwrap_or_default().into(),
        }
    }
}

impl TryFrom<pb::ReferenceImages> for ReferenceImages {
    type Error = ApiError;

    fn try_from(r: pb::ReferenceImages) -> Result<Self, ApiError> {
        let images = ReferenceImages {
            width: r.width,
            height: r.height,
            first: r.first.to_vec(),
            last: (!r.last.is_empty()).then(|| r.last.to_vec()),
        };
        images.validate().map_err(|m| invalid("", m))?;
        Ok(images)
    }
}

impl From<EncodeTextRequest> for pb::EncodeTextRequest {
    fn from(r: EncodeTextRequest) -> Self {
        pb::EncodeTextRequest {
            job_id: r.job_id,
            model: r.model,
            prompt: r.prompt,
            negative_prompt: r.negative_prompt,
            reference: r.reference.map(Into::into),
        }
    }
}

impl TryFrom<pb::EncodeTextRequest> for EncodeTextRequest {
    type Error = ApiError;

    fn try_from(r: pb::EncodeTextRequest) -> Result<Self, ApiError> {
        if r.model.is_empty() {
            return Err(invalid("model", "is required"));
        }
        Ok(EncodeTextRequest {
            job_id: r.job_id,
            model: r.model,
            prompt: r.prompt,
            negative_prompt: r.negative_prompt,
            reference: r
                .reference
                .map(ReferenceImages::try_from)
                .transpose()
                .map_err(|e| nest("reference", e))?,
        })
    }
}

/// The embeddings of an `EncodeTextResponse` (each `None` when the model takes none).
pub fn embeddings_from_pb(r: pb::EncodeTextResponse) -> Result<EncodedConditioning, ApiError> {
    let c = Conditioning::try_from(required(r.conditioning, "conditioning")?).map_err(|e| nest("conditioning", e))?;
    Ok(EncodedConditioning {
        text: c.embeddings,
        image: c.image_embeddings,
    })
}

/// An `EncodeTextResponse` for `request` carrying `encoded` (the reference images are not sent
/// back).
pub fn embeddings_to_pb(request: &EncodeTextRequest, encoded: EncodedConditioning) -> pb::EncodeTextResponse {
    pb::EncodeTextResponse {
        conditioning: Some(
            Conditioning {
                blend: None,
                prompt: request.prompt.clone(),
                negative_prompt: request.negative_prompt.clone(),
                embeddings: encoded.text,
                image_embeddings: encoded.image,
                reference: None,
            }
            .into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_embeddings() -> Conditioning {
        Conditioning {
            blend: None,
            prompt: "a lighthouse".into(),
            negative_prompt: "blurry".into(),
            embeddings: Some(TextEmbeddings {
                rows: 2,
                dim: 3,
                prompt: vec![0.5, -0.0, 1e-40, f32::MAX, -1.0, 3.25],
                negative: vec![0.0; 6],
            }),
            reference: Some(ReferenceImages {
                width: 2,
                height: 1,
                first: vec![1, 2, 3, 4, 5, 6],
                last: Some(vec![6, 5, 4, 3, 2, 1]),
            }),
            image_embeddings: Some(ImageEmbeddings {
                rows: 1,
                dim: 2,
                data: vec![-0.0, 1e-40],
            }),
        }
    }

    #[test]
    fn embeddings_round_trip_bit_exactly() {
        let c = with_embeddings();
        let back = Conditioning::try_from(pb::Conditioning::from(c.clone())).expect("valid");
        let (a, b) = (c.embeddings.unwrap(), back.embeddings.unwrap());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a.prompt), bits(&b.prompt));
        assert_eq!(bits(&a.negative), bits(&b.negative));
        assert_eq!((b.rows, b.dim), (2, 3));
        assert_eq!(back.reference, c.reference);
        let (a, b) = (c.image_embeddings.unwrap(), back.image_embeddings.unwrap());
        assert_eq!((bits(&a.data), b.rows, b.dim), (bits(&b.data), 1, 2));
        let none = Conditioning::new("p", "n");
        assert_eq!(
            Conditioning::try_from(pb::Conditioning::from(none.clone())).unwrap(),
            none
        );
    }

    fn field_of(e: ApiError) -> String {
        match e {
            ApiError::InvalidArgument(v) => format!("{}: {}", v[0].field, v[0].message),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn bad_embeddings_name_the_field() {
        let good = pb::Conditioning::from(with_embeddings());
        let cases: Vec<(pb::Conditioning, &str)> = vec![
            (
                pb::Conditioning {
                    embedding_shape: vec![],
                    ..good.clone()
                },
                "embedding_shape: is empty",
            ),
            (
                pb::Conditioning {
                    embedding_shape: vec![6],
                    ..good.clone()
                },
                "embedding_shape: [6] has 1 dimensions",
            ),
            (
                pb::Conditioning {
                    embedding_shape: vec![3, 3],
                    ..good.clone()
                },
                "embeddings: prompt embedding holds 6 values, not 3 × 3",
            ),
            (
                pb::Conditioning {
                    negative_embedding: good.negative_embedding.slice(0..5),
                    ..good.clone()
                },
                "negative_embedding: f32 payload of 5 bytes",
            ),
            (
                pb::Conditioning {
                    negative_embedding: wire::encode_f32_le(&[f32::NAN; 6]),
                    ..good.clone()
                },
                "embeddings: negative prompt embedding value 0 is NaN",
            ),
            (
                pb::Conditioning {
                    embedding_shape: vec![0, 3],
                    prompt_embedding: Default::default(),
                    negative_embedding: Default::default(),
                    ..good.clone()
                },
                "embeddings: shape [0, 3] is empty",
            ),
            (
                pb::Conditioning {
                    image_embedding_shape: vec![],
                    ..good.clone()
                },
                "image_embedding_shape: is empty but an image embedding was sent",
            ),
            (
                pb::Conditioning {
                    image_embedding: wire::encode_f32_le(&[f32::INFINITY, 0.0]),
                    ..good.clone()
                },
                "image_embedding: image embedding value 0 is inf",
            ),
            (
                pb::Conditioning {
                    reference: Some(pb::ReferenceImages {
                        first: vec![0u8; 5].into(),
                        ..good.reference.clone().unwrap()
                    }),
                    ..good.clone()
                },
                "reference: first image holds 5 bytes, not 2x1x3 = 6",
            ),
        ];
        for (msg, want) in cases {
            let got = field_of(Conditioning::try_from(msg).unwrap_err());
            assert!(got.starts_with(want), "got {got:?}, want it to start with {want:?}");
        }
    }
}
