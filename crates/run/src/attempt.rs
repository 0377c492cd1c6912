//! One migration attempt as a task of its own: the skeleton every backend
//! shares. A backend's [`Migration`](crate::Migration) handle must answer
//! at once, so the attempt's work (setting the ends up, following the
//! migration, carrying out the controller's requests) runs on a task, and
//! the handle talks to it through three things only, held here in an
//! [`AttemptTask`]: the requests it sends ([`AttemptTask::send`]), what
//! the task last wrote for it to read ([`AttemptTask::read`]: the
//! attempt's stage and measurements), and the task's result, once it is
//! there the run loop is woken to observe it ([`AttemptTask::ended`]).
//!
//! What stays the backend's own: the requests' type, the result's, and the
//! small state machine its task drives (a stage enum whose transitions are
//! written in one function, as smoltcp's sockets keep theirs: evac-qemu's
//! `attempt::progress`, evac-libvirt's `backend::attempt::progress`).
//! Their stages differ (a QEMU attempt starts its destination process and
//! watches both ends; a libvirt attempt waits for its hosts' slots and a
//! stagger, and libvirt finds where the domain landed), so one enum for
//! both would carry stages each of them never enters.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::Wake;

/// Why an attempt has no result: its task ended without one (it
/// panicked, or the runtime shut down).
pub const NO_RESULT: &str = "the migration task ended without a result";

/// The handle's end of one attempt's task: `C`, the requests the task
/// takes; `P`, what it writes for the handle (its progress); `R`, its
/// result.
pub struct AttemptTask<C, P, R> {
    requests: mpsc::UnboundedSender<C>,
    progress: Arc<Mutex<P>>,
    result: oneshot::Receiver<R>,
}

impl<C, P: Default, R: Send + 'static> AttemptTask<C, P, R> {
    /// Spawns the task `task` makes of the receiving end of the requests
    /// and the progress (which starts as `P::default()`); once its result
    /// is there, `wake` wakes the run loop to observe it. Returns at once,
    /// as [`Backend::start`](crate::Backend::start) must.
    pub fn spawn<F>(
        wake: Wake,
        task: impl FnOnce(mpsc::UnboundedReceiver<C>, Arc<Mutex<P>>) -> F,
    ) -> AttemptTask<C, P, R>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let progress = Arc::new(Mutex::new(P::default()));
        let (result_tx, result) = oneshot::channel();
        let task = task(requests_rx, progress.clone());
        tokio::spawn(async move {
            let _ = result_tx.send(task.await);
            wake.wake();
        });
        AttemptTask {
            requests,
            progress,
            result,
        }
    }
}

impl<C, P, R> AttemptTask<C, P, R> {
    /// Sends a request to the task. A task that has ended reports its
    /// result at the next observation, so a request it no longer reads is
    /// no error.
    pub fn send(&self, request: C) {
        let _ = self.requests.send(request);
    }

    /// Reads what the task last wrote.
    pub fn read<T>(&self, read: impl FnOnce(&P) -> T) -> T {
        read(
            &self
                .progress
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }

    /// The task's result if it has ended (`Err`: [`NO_RESULT`]); `None`
    /// while it runs. Once taken, it is not given again.
    pub fn ended(&mut self) -> Option<Result<R, String>> {
        match self.result.try_recv() {
            Ok(result) => Some(Ok(result)),
            Err(oneshot::error::TryRecvError::Empty) => None,
            Err(oneshot::error::TryRecvError::Closed) => Some(Err(NO_RESULT.to_owned())),
        }
    }

    /// Waits at most `timeout` for the task's result (`Err`:
    /// [`NO_RESULT`]); `None` past it.
    pub async fn result_within(&mut self, timeout: Duration) -> Option<Result<R, String>> {
        let result = tokio::time::timeout(timeout, &mut self.result).await.ok()?;
        Some(result.map_err(|_| NO_RESULT.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Seen {
        requests: Vec<u32>,
    }

    #[tokio::test]
    async fn requests_reach_the_task_its_writing_the_handle_and_its_result_wakes_the_loop() {
        let wake = Wake::default();
        let mut task: AttemptTask<u32, Seen, u32> = AttemptTask::spawn(
            wake.clone(),
            |mut requests: mpsc::UnboundedReceiver<u32>, seen: Arc<Mutex<Seen>>| async move {
                // Ends with the sum of what it was sent, once sent a 0.
                let mut sum = 0;
                while let Some(n) = requests.recv().await {
                    seen.lock().unwrap().requests.push(n);
                    if n == 0 {
                        break;
                    }
                    sum += n;
                }
                sum
            },
        );
        assert!(task.ended().is_none(), "it waits for requests");
        for n in [4, 5, 0] {
            task.send(n);
        }
        let woken = tokio::time::timeout(Duration::from_secs(5), wake.woken()).await;
        assert!(woken.is_ok(), "the loop is woken once the result is there");
        assert_eq!(task.ended(), Some(Ok(9)));
        assert_eq!(task.read(|s| s.requests.clone()), vec![4, 5, 0]);
        // Ended: a request is no error, and the result is not given twice.
        task.send(7);
        assert_eq!(task.ended(), Some(Err(NO_RESULT.to_owned())));
    }

    #[tokio::test]
    async fn a_task_that_dies_ends_without_a_result_and_a_slow_one_is_waited_for_no_longer_than_asked() {
        let mut dead: AttemptTask<(), (), u32> = AttemptTask::spawn(Wake::default(), |_, _| async {
            panic!("the task dies");
        });
        let ended = dead.result_within(Duration::from_secs(5)).await;
        assert_eq!(ended, Some(Err(NO_RESULT.to_owned())));
        let mut slow: AttemptTask<(), (), u32> = AttemptTask::spawn(Wake::default(), |_, _| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            1
        });
        let began = std::time::Instant::now();
        assert_eq!(slow.result_within(Duration::from_millis(50)).await, None);
        assert!(began.elapsed() < Duration::from_secs(5));
        assert!(slow.ended().is_none());
    }
}
