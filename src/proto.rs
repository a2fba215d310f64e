//! The generated gRPC code for `proto/reprise/v1`. Only `api/`, the worker and
//! tests use it; domain and engine never see these types.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("reprise.v1");

/// The encoded descriptor set of our protos, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("reprise_descriptor");
