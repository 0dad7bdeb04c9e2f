//! Avro codecs (consumer side) and serializers (producer and outbox side).

pub use weir_registry::{
    FrameError, HEADER_LEN, MAGIC_BYTE, SubjectNameStrategy, frame, split_frame,
};

mod decode;
pub use decode::*;
mod encode;
pub use encode::*;
#[cfg(test)]
mod tests;
