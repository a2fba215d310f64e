//! The generated gRPC code for `proto/reprise/v1`. Only `api/`, the worker and
//! tests use it; domain and engine never see these types.

#![allow(clippy::all, missing_docs)]

tonic::include_proto!("reprise.v1");

/// The encoded descriptor set of our protos, served by reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("reprise_descriptor");

/// Response of GetExecution. Written by hand (build.rs maps the message here)
/// so that the server can send an execution it encoded earlier: a view read
/// again and again is converted and encoded once per change, not once per
/// read. On the wire, and to anyone decoding it, it is the generated message.
#[derive(Clone, PartialEq, Default)]
pub struct GetExecutionResponse {
    /// The execution with its stages and workflows.
    pub execution: Option<Execution>,
    /// What the caller may do with the execution now, one entry per action
    /// (resume, abort, pause, continue, approve, reject), each with why not
    /// when it may not.
    pub allowed_actions: Vec<ActionAllowance>,
    /// `execution` already encoded: sent in its place when set. Decoding
    /// never sets it.
    pub encoded_execution: Option<bytes::Bytes>,
}

/// Response of WatchExecution, written by hand like [`GetExecutionResponse`]:
/// the subscribers of one execution are sent one encoding of each change.
#[derive(Clone, PartialEq, Default)]
pub struct WatchExecutionResponse {
    /// The execution as it is after a change.
    pub execution: Option<Execution>,
    /// `execution` already encoded: sent in its place when set. Decoding
    /// never sets it.
    pub encoded_execution: Option<bytes::Bytes>,
}

/// Field 1 of both: the execution, as bytes encoded earlier or as the message.
mod execution_field {
    use prost::encoding::{self, DecodeContext, WireType};

    use super::Execution;

    pub fn encode(encoded: &Option<bytes::Bytes>, execution: &Option<Execution>, buf: &mut impl bytes::BufMut) {
        match (encoded, execution) {
            (Some(bytes), _) => {
                encoding::encode_key(1, WireType::LengthDelimited, buf);
                encoding::encode_varint(bytes.len() as u64, buf);
                buf.put_slice(bytes);
            }
            (None, Some(execution)) => encoding::message::encode(1, execution, buf),
            (None, None) => {}
        }
    }

    pub fn encoded_len(encoded: &Option<bytes::Bytes>, execution: &Option<Execution>) -> usize {
        match (encoded, execution) {
            (Some(bytes), _) => encoding::key_len(1) + encoding::encoded_len_varint(bytes.len() as u64) + bytes.len(),
            (None, Some(execution)) => encoding::message::encoded_len(1, execution),
            (None, None) => 0,
        }
    }

    pub fn merge(
        message: &'static str,
        execution: &mut Option<Execution>,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        encoding::message::merge(wire_type, execution.get_or_insert_with(Default::default), buf, ctx).map_err(
            |mut e| {
                e.push(message, "execution");
                e
            },
        )
    }
}

impl prost::Message for GetExecutionResponse {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        execution_field::encode(&self.encoded_execution, &self.execution, buf);
        prost::encoding::message::encode_repeated(2, &self.allowed_actions, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => execution_field::merge("GetExecutionResponse", &mut self.execution, wire_type, buf, ctx),
            2 => prost::encoding::message::merge_repeated(wire_type, &mut self.allowed_actions, buf, ctx).map_err(
                |mut e| {
                    e.push("GetExecutionResponse", "allowed_actions");
                    e
                },
            ),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        execution_field::encoded_len(&self.encoded_execution, &self.execution)
            + prost::encoding::message::encoded_len_repeated(2, &self.allowed_actions)
    }

    fn clear(&mut self) {
        *self = GetExecutionResponse::default();
    }
}

impl prost::Message for WatchExecutionResponse {
    fn encode_raw(&self, buf: &mut impl bytes::BufMut) {
        execution_field::encode(&self.encoded_execution, &self.execution, buf);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        match tag {
            1 => execution_field::merge("WatchExecutionResponse", &mut self.execution, wire_type, buf, ctx),
            _ => prost::encoding::skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        execution_field::encoded_len(&self.encoded_execution, &self.execution)
    }

    fn clear(&mut self) {
        *self = WatchExecutionResponse::default();
    }
}

/// The encoded bytes' size, not the bytes.
fn bytes_len(b: &Option<bytes::Bytes>) -> Option<String> {
    b.as_ref().map(|b| format!("{} bytes", b.len()))
}

impl std::fmt::Debug for GetExecutionResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GetExecutionResponse")
            .field("execution", &self.execution)
            .field("allowed_actions", &self.allowed_actions)
            .field("encoded_execution", &bytes_len(&self.encoded_execution))
            .finish()
    }
}

impl std::fmt::Debug for WatchExecutionResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchExecutionResponse")
            .field("execution", &self.execution)
            .field("encoded_execution", &bytes_len(&self.encoded_execution))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    fn execution() -> Execution {
        Execution {
            id: "e-1".into(),
            pipeline_id: "p-1".into(),
            stages: vec![StageExecution { name: "build".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    fn allowed() -> Vec<ActionAllowance> {
        vec![
            ActionAllowance { action: ExecutionAction::Abort as i32, allowed: true, ..Default::default() },
            ActionAllowance {
                action: ExecutionAction::Resume as i32,
                reason: "EXECUTION_RUNNING".into(),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn an_execution_encoded_earlier_goes_out_as_the_message_would() {
        let built =
            GetExecutionResponse { execution: Some(execution()), allowed_actions: allowed(), ..Default::default() };
        let encoded = GetExecutionResponse {
            execution: None,
            allowed_actions: allowed(),
            encoded_execution: Some(execution().encode_to_vec().into()),
        };
        assert_eq!(encoded.encoded_len(), built.encoded_len());
        assert_eq!(encoded.encode_to_vec(), built.encode_to_vec());
        let decoded = GetExecutionResponse::decode(encoded.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, built, "decoding fills the message, never the encoded bytes");
        // The encoded bytes win over a message set beside them.
        let both = GetExecutionResponse { execution: Some(Execution::default()), ..encoded.clone() };
        assert_eq!(both.encode_to_vec(), built.encode_to_vec());
    }

    #[test]
    fn a_watched_change_encoded_earlier_goes_out_as_the_message_would() {
        let built = WatchExecutionResponse { execution: Some(execution()), ..Default::default() };
        let encoded =
            WatchExecutionResponse { execution: None, encoded_execution: Some(execution().encode_to_vec().into()) };
        assert_eq!(encoded.encoded_len(), built.encoded_len());
        assert_eq!(encoded.encode_to_vec(), built.encode_to_vec());
        assert_eq!(WatchExecutionResponse::decode(encoded.encode_to_vec().as_slice()).unwrap(), built);
    }

    #[test]
    fn an_empty_answer_and_unknown_fields_decode() {
        let empty = GetExecutionResponse::default();
        assert!(empty.encode_to_vec().is_empty());
        assert_eq!(GetExecutionResponse::decode(&[][..]).unwrap(), empty);
        // Field 9 (a varint) is skipped; field 1 with the wrong wire type is refused.
        assert_eq!(GetExecutionResponse::decode(&[0x48, 0x01][..]).unwrap(), empty);
        assert!(GetExecutionResponse::decode(&[0x08, 0x01][..]).is_err());
    }
}
