//! `weir replay --copy-to`: re-processes an offset range by copying it to another topic.

/// Runs `weir replay`.
pub(crate) async fn run(args: weir_cli::ReplayArgs, copy_to: Option<String>) -> anyhow::Result<()> {
    let Some(target) = copy_to else {
        anyhow::bail!(
            "`weir replay` needs a processor: pass --copy-to TOPIC to copy the range, or build your own binary with `weir_cli::run_replay(args, codec, your_processor)`"
        );
    };
    // The same brokers, credentials and TLS settings as the replay's consumer.
    let producer = weir::Producer::for_consumer(&args.consumer_config()?)?;
    let processor = weir::processor_fn(move |m: weir::Message<Option<bytes::Bytes>>| {
        let producer = producer.clone();
        let target = target.clone();
        async move {
            let raw = m.raw();
            let mut r = weir::Record::to(target);
            r.key = raw.key.clone();
            r.payload = raw.payload.clone();
            r.headers = raw.headers.clone();
            producer
                .send(r)
                .await
                .map_err(|e| weir::ProcessError::retryable(e).with_class("copy"))?;
            Ok(())
        }
    });
    weir_cli::run_replay(args, weir::BytesCodec, processor).await?;
    Ok(())
}
