//! `shrink-graph`: the intermediate representation every stage reads and rewrites.
//!
//! An ONNX `ModelProto` (prost types generated from `proto/onnx.proto`) is loaded
//! into a [`Model`]: the model-level fields as they were, and a [`Graph`] on a
//! petgraph `StableGraph` whose nodes are graph inputs, weights (initializers),
//! ops and graph outputs, and whose edges carry values from an output slot of a
//! producer to an input slot of a consumer. `StableGraph` keeps every other
//! node's index valid when a node is removed, so stages can hold indices while
//! they rewrite.
//!
//! Invariants (checked by [`Graph::verify`]):
//! - every value has exactly one producer and a unique, non-empty name;
//! - every op input slot has at most one edge, every output node exactly one;
//! - the op nodes admit a topological order;
//! - every dense weight holds exactly as many elements as its dims say.
//!
//! What is not interpreted passes through untouched: attributes (subgraphs of
//! `If`/`Loop`/`Scan` included), domains, value_info, metadata, doc strings,
//! functions, training info. Saving a loaded model keeps node order, names and
//! every field; `save(load(save(m))) == save(m)` byte for byte.
//!
//! This crate knows nothing of stages, TOML, training or tract.

mod analysis;
pub mod builder;
mod error;
mod export;
mod graph;
pub mod groups;
mod import;
mod io;
pub mod onnx;
pub mod op;
pub mod rewrite;
mod shape;
mod tensor;
mod verify;

#[cfg(test)]
mod tests;

pub use analysis::{LayerInfo, ModelSummary, ValueSummary, summarize};
pub use error::GraphError;
pub use export::model_exports;
pub use graph::{Edge, Graph, Model, Node, NodeId, NodeKind, Op, Slot, ValueRef, Weight};
pub use io::{LoadOptions, save_file};
pub use shape::{Dim, Shape, Shapes, declared_shape, infer_shapes};
pub use tensor::{DataType, Tensor};

/// The newest ONNX IR version this schema describes (onnx 1.22).
pub const IR_VERSION: i64 = 13;
