/*
 * weir-ffi's one C function: whether a consumed message surely has no
 * headers, read from librdkafka's own message struct without parsing.
 *
 * Why: librdkafka offers no way to ask "does this message have headers?"
 * other than rd_kafka_message_headers(), which for a record without headers
 * still allocates a shadow buffer (calloc + a buffer segment), reads the
 * header count (0) and frees both: about 1,100 instructions per message,
 * 45% of Weir's poll thread (benches/README.md).
 *
 * How it stays correct:
 *  - It is compiled by build.rs against the private headers and config.h
 *    of the very librdkafka tree rdkafka-sys built and links statically
 *    (DEP_RDKAFKA_ROOT), so the struct layout is the library's own. Without
 *    that tree (a system librdkafka) it is not built and Weir always asks
 *    librdkafka.
 *  - weir_peek_version() returns the version of the headers; the Rust side
 *    uses the peek only when it equals rd_kafka_version() at run time.
 *  - It answers 1 only where rd_kafka_message_headers() would answer
 *    RD_KAFKA_RESP_ERR__NOENT without any side effect: a consumer's message
 *    whose headers were never parsed and whose raw header section is empty
 *    or starts with the varint 0 (a header count of zero). Every other case
 *    answers 0: "ask librdkafka".
 */
#include "rdkafka_int.h"
#include "rdkafka_msg.h"

_Static_assert(offsetof(rd_kafka_msg_t, rkm_rkmessage) == 0,
               "rd_kafka_message2msg() relies on the message coming first");

int weir_peek_version(void) {
        return RD_KAFKA_VERSION;
}

int weir_peek_headerless(const rd_kafka_message_t *rkmessage) {
        const rd_kafka_msg_t *rkm = (const rd_kafka_msg_t *)rkmessage;
        const rd_kafkap_bytes_t *bin;

        if (rkmessage->err || rkm->rkm_headers)
                return 0;
        /* rkm_u.consumer is the union member of a consumer's message only. */
        if (!rkmessage->rkt || !rkmessage->rkt->rkt_rk ||
            rkmessage->rkt->rkt_rk->rk_type != RD_KAFKA_CONSUMER)
                return 0;
        bin = &rkm->rkm_u.consumer.binhdrs;
        if (RD_KAFKAP_BYTES_LEN(bin) == 0)
                return 1;
        /* rd_kafka_msg_headers_parse() reads a zigzag varint count first:
         * a first byte of 0 is the whole varint, and the count 0. */
        return ((const unsigned char *)bin->data)[0] == 0;
}
