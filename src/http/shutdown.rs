//! Noticing that the worker is stopping, from the tasks that serve.

use futures_util::task::AtomicWaker;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use tokio::sync::watch;

/// Resolves once the worker is stopping (the watch guard is not held across awaits).
pub async fn stopping(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// `work` to its end, or None once `stop` resolves first.
///
/// Unlike `select!`, this polls `stop` only after `stop`'s own waker fired. A
/// connection's task is polled for every read and write, and a watch
/// re-registers its waker under a lock each time it is polled: about 400
/// instructions per request for a signal that comes once in a worker's life.
pub fn until_stopped<W, S>(work: W, stop: S) -> UntilStopped<W, S>
where
    W: Future + Unpin,
    S: Future + Unpin,
{
    let flag = Arc::new(StopFlag {
        fired: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    UntilStopped {
        work,
        stop,
        waker: Waker::from(flag.clone()),
        flag,
    }
}

pub struct UntilStopped<W, S> {
    work: W,
    stop: S,
    flag: Arc<StopFlag>,
    /// `flag` as a waker, made once.
    waker: Waker,
}

struct StopFlag {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for StopFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<W, S> Future for UntilStopped<W, S>
where
    W: Future + Unpin,
    S: Future + Unpin,
{
    type Output = Option<W::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        this.flag.task.register(cx.waker());
        if let Poll::Ready(out) = Pin::new(&mut this.work).poll(cx) {
            return Poll::Ready(Some(out));
        }
        if this.flag.fired.swap(false, Ordering::AcqRel)
            && Pin::new(&mut this.stop)
                .poll(&mut Context::from_waker(&this.waker))
                .is_ready()
        {
            return Poll::Ready(None);
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    #[test]
    fn work_that_ends_first_is_returned() {
        let rt = runtime();
        let (_tx, mut rx) = watch::channel(false);
        let out = rt.block_on(until_stopped(
            Box::pin(async { 7 }),
            Box::pin(stopping(&mut rx)),
        ));
        assert_eq!(out, Some(7));
    }

    #[test]
    fn stopping_ends_work_that_is_still_waiting() {
        let rt = runtime();
        let (tx, mut rx) = watch::channel(false);
        let out = rt.block_on(async {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send(true).unwrap();
            });
            // Work that keeps its task busy: woken every millisecond, so
            // the stop must be noticed among many polls of the work.
            let work = async {
                loop {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            };
            tokio::time::timeout(
                Duration::from_secs(5),
                until_stopped(Box::pin(work), Box::pin(stopping(&mut rx))),
            )
            .await
        });
        assert_eq!(out, Ok(None::<()>));
    }
}
