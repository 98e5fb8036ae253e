//! `Conditioning` and the `EncodeText` messages: prompts plus, for models with a text encoder,
//! their embeddings as exact f32 bits. Embeddings from the wire are checked (shape, length,
//! finiteness) before any worker conditions on them.

use super::{invalid, required, to_u32, to_usize};
use crate::pb;
use crate::wire;
use longshot_core::api::{ApiError, EncodeTextRequest};
use longshot_core::denoiser::{Conditioning, TextEmbeddings};

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
        pb::Conditioning {
            prompt: c.prompt,
            negative_prompt: c.negative_prompt,
            prompt_embedding,
            negative_embedding,
            embedding_shape,
        }
    }
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
            let [rows, dim] = c.embedding_shape[..] else {
                return Err(invalid(
                    "embedding_shape",
                    format!(
                        "{:?} has {} dimensions, expected 2 ([rows, dim])",
                        c.embedding_shape,
                        c.embedding_shape.len()
                    ),
                ));
            };
            let decode =
                |bytes: &[u8], field: &str| wire::decode_f32_le(bytes).map_err(|e| invalid(field, e.to_string()));
            let e = TextEmbeddings {
                rows: to_usize(rows, "embedding_shape")?,
                dim: to_usize(dim, "embedding_shape")?,
                prompt: decode(&c.prompt_embedding, "prompt_embedding")?,
                negative: decode(&c.negative_embedding, "negative_embedding")?,
            };
            e.validate().map_err(|m| invalid("embeddings", m))?;
            Some(e)
        };
        Ok(Conditioning {
            prompt: c.prompt,
            negative_prompt: c.negative_prompt,
            embeddings,
        })
    }
}

impl From<EncodeTextRequest> for pb::EncodeTextRequest {
    fn from(r: EncodeTextRequest) -> Self {
        pb::EncodeTextRequest {
            job_id: r.job_id,
            model: r.model,
            prompt: r.prompt,
            negative_prompt: r.negative_prompt,
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
        })
    }
}

/// The embeddings of an `EncodeTextResponse` (`None` when the model takes none).
pub fn embeddings_from_pb(r: pb::EncodeTextResponse) -> Result<Option<TextEmbeddings>, ApiError> {
    let c = Conditioning::try_from(required(r.conditioning, "conditioning")?)
        .map_err(|e| super::nest("conditioning", e))?;
    Ok(c.embeddings)
}

/// An `EncodeTextResponse` for `request` carrying `embeddings`.
pub fn embeddings_to_pb(request: &EncodeTextRequest, embeddings: Option<TextEmbeddings>) -> pb::EncodeTextResponse {
    pb::EncodeTextResponse {
        conditioning: Some(
            Conditioning {
                prompt: request.prompt.clone(),
                negative_prompt: request.negative_prompt.clone(),
                embeddings,
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
            prompt: "a lighthouse".into(),
            negative_prompt: "blurry".into(),
            embeddings: Some(TextEmbeddings {
                rows: 2,
                dim: 3,
                prompt: vec![0.5, -0.0, 1e-40, f32::MAX, -1.0, 3.25],
                negative: vec![0.0; 6],
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
        ];
        for (msg, want) in cases {
            let got = field_of(Conditioning::try_from(msg).unwrap_err());
            assert!(got.starts_with(want), "got {got:?}, want it to start with {want:?}");
        }
    }
}
