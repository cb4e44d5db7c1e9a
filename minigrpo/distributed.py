"""Data parallelism over processes (`torchrun`): the process group and the few collectives the trainers use.

    torchrun --standalone --nproc_per_node K -m minigrpo.cli train ...   # K ranks, one process each

torchrun starts K copies of the command and gives each RANK, WORLD_SIZE and LOCAL_RANK in its
environment. `process_group(device)` joins them; without those variables (or with K = 1) it does
nothing, and every helper below is the identity, so one process runs exactly the code it ran before.

How `minigrpo train` and `minigrpo ppo` split a step among the K ranks (minigrpo/train.py, train_ppo.py):
  * rank r samples and scores its contiguous share of the step's B prompts, B/K of them: whole
    groups, so each group's advantages need no other rank's rewards. The sampler's uniforms are a
    function of (seed, step, global prompt index), so the samples do not depend on K.
  * what depends on the whole batch is computed on the whole batch, the same on every rank: the
    rewards are all-gathered (advantages, the `batch` scale's std, the safety constraint's λ, the
    logged scores), and token counts and loss sums are all-reduced (`dapo`'s normaliser, PPO's
    whitening and token means, the logged losses).
  * each rank's loss is scaled so that the SUM of the ranks' losses is the single-process loss;
    after the backward, `all_reduce_grads` sums the LoRA gradients over ranks, one collective per
    optimizer step. Every rank then holds the single process's gradient, clips it and takes the
    same AdamW step: the K-rank run equals the single-process run to float rounding
    (tests/test_distributed.py checks the adapter to 1e-5).

Why an explicit all-reduce and not DistributedDataParallel (DDP): the trainable parameters are a
small flat set of LoRA matrices, so one flattened buffer summed once per step costs nothing DDP's
bucketing and overlap would save; DDP wraps the model (the sampler, `lora_disabled` and the
checkpoint code would all see a wrapper), averages gradients where the loss types need a sum with
their own scaling, and hides both behind hooks. The sum is one line a reader can follow.

Devices: `--device cpu` uses the gloo backend; `--device cuda` puts rank r on cuda:LOCAL_RANK
(one GPU per process) and sums its tensors with NCCL (an explicit `cuda:N` is refused under
torchrun). Control messages (the device check, an error on rank 0) always go over gloo, so ranks
on different device types get a one-line error, not a hang. Every collective has a finite
timeout, MINIGRPO_DIST_TIMEOUT_S seconds (default 1800). A rank that raises exits non-zero, and
torchrun's agent then stops the others; each rank's stdout except rank 0's goes to /dev/null.
"""
import contextlib
import os
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from minigrpo.errors import InputError
from minigrpo.flags import check_device

DEVICE_TYPES = ("cpu", "cuda", "mps")


class PeerStopped(RuntimeError):
    """A collective failed: another rank stopped (its own message says why) or did not answer within the timeout."""
_data_group = None  # the NCCL group when the ranks are on CUDA; None: the default (gloo) group


def launched():
    """(rank, world size) that torchrun gave this process in its environment; (0, 1) when run directly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def rank():
    """This process's rank, 0 … world() − 1."""
    return dist.get_rank() if dist.is_initialized() else 0


def world():
    """The number of ranks K (1 without torchrun)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main():
    """Whether this is rank 0, the one that prints and writes files."""
    return rank() == 0


def split(n, what):
    """(lo, n/K): this rank's contiguous share [lo, lo + n/K) of n items; InputError naming `what` unless K divides n."""
    K = world()
    if n % K:
        raise InputError(f"{what} do not split over {K} ranks (torchrun --nproc_per_node {K}); "
                         f"expected a multiple of {K}")
    return rank() * (n // K), n // K


@contextlib.contextmanager
def process_group(device):
    """Join torchrun's process group for the duration of the block; yields this rank's torch device string.

    At world size 1 (no torchrun) nothing is initialised and `device` comes back unchanged. The
    group is not destroyed on leaving the block (see the end of it): the process should exit next.
    """
    r, K = launched()
    if K == 1 or dist.is_initialized():  # one process, or a caller that already joined the group
        yield device
        return
    check_device(device)
    d = torch.device(device)
    if d.type == "cuda":
        if d.index is not None:
            raise InputError(f"--device {device}: under torchrun each rank uses cuda:LOCAL_RANK; pass --device cuda")
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=float(os.environ.get("MINIGRPO_DIST_TIMEOUT_S", 1800)))
    dist.init_process_group("gloo", timeout=timeout)  # control messages; CPU tensors
    global _data_group
    try:
        codes = all_gather_cat(torch.tensor([DEVICE_TYPES.index(d.type)]))  # (K,)
        if (codes != codes[0]).any():
            kinds = ", ".join(f"rank {i}: {DEVICE_TYPES[c]}" for i, c in enumerate(codes.tolist()))
            raise InputError(f"--device: the ranks run on different device types ({kinds}); expected one type on every rank")
        if d.type == "cuda":
            _data_group = dist.new_group(backend="nccl", timeout=timeout)  # CUDA tensors
        with contextlib.ExitStack() as quiet:
            if r != 0:  # rank 0 alone prints progress
                quiet.enter_context(contextlib.redirect_stdout(quiet.enter_context(open(os.devnull, "w"))))
            yield device
        barrier()  # rank 0 may still be writing; a rank that left early would abort gloo's threads
    finally:
        # Not destroyed here: the process leaves through `leave`, in order (see there).
        _data_group = None


def leave(code):
    """Exit this torchrun rank with `code` now, rank 0 last; never returns.

    Why not a plain exit: gloo's run-loop threads free finished work (a barrier's, an all-reduce's)
    in the background, and freeing the tensors in it takes the GIL. If that happens while the
    interpreter is shutting down, the thread is made to exit inside a noexcept destructor and the
    process aborts ("terminate called without an active exception", SIGABRT; seen with gdb in about
    one 2-rank test run in ten, destroy_process_group or not; cf. pytorch/pytorch#179291). os._exit
    skips the shutdown. The ranks other than 0 announce themselves in torchrun's key-value store and
    leave at once; rank 0 waits for them (at most 30 s: a rank that died is not waited for) and leaves
    last, so no rank still running sees a peer's sockets close. The kernel closes the sockets.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    with contextlib.suppress(Exception):  # a broken store (a peer died) must not keep a rank alive
        store = dist.distributed_c10d._get_default_store()
        if rank() != 0:
            store.set(f"minigrpo/left/{rank()}", "1")
        else:
            store.wait([f"minigrpo/left/{r}" for r in range(1, world())], timedelta(seconds=30))
            time.sleep(0.2)  # from a peer's store.set to its os._exit
    os._exit(code)


def _group(t):
    return _data_group if t.is_cuda else None


@contextlib.contextmanager
def _collective(what):
    """Turn a collective's failure (gloo: 'Connection closed by peer'; a timeout) into one PeerStopped line."""
    try:
        yield
    except RuntimeError as e:
        raise PeerStopped(f"{what} across ranks failed: another rank stopped or timed out "
                          f"({str(e).splitlines()[0][:200]})") from None


def all_reduce_sum(t):
    """The sum over ranks of tensor t (a new tensor; t itself at world size 1)."""
    if world() == 1:
        return t
    out = t.clone()
    with _collective("all_reduce"):
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=_group(out))
    return out


def all_gather_cat(t):
    """Every rank's t concatenated along dim 0, in rank order (first dims may differ); t itself at world size 1."""
    if world() == 1:
        return t
    dtype = t.dtype
    t = t.to(torch.uint8) if dtype == torch.bool else t  # gloo has no bool
    n = torch.tensor([t.shape[0]], device=t.device)
    sizes = [torch.zeros_like(n) for _ in range(world())]
    with _collective("all_gather"):
        dist.all_gather(sizes, n, group=_group(t))
        longest = int(max(sizes))
        padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)  # all_gather needs one shape
        padded[:t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded, group=_group(t))
    return torch.cat([p[:int(s)] for p, s in zip(parts, sizes)]).to(dtype)


def all_reduce_grads(params):
    """Sum the gradients of `params` over ranks in place: one flattened buffer, one all_reduce (None counts as 0)."""
    if world() == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))  # (Σ numel,)
    s = 0
    for p in params:
        p.grad = flat[s:s + p.numel()].view_as(p).clone()
        s += p.numel()


def barrier():
    """Wait until every rank gets here."""
    if world() > 1:
        with _collective("barrier"):
            dist.barrier()


def on_main_first(fn):
    """fn() on rank 0, then on the other ranks (once rank 0's writes are done); returns its result.

    For the checks of --out: rank 0 alone may repair or prepare the directory. If fn raises on
    rank 0, every other rank raises the same message instead of waiting (an InputError stays one).
    """
    if world() == 1:
        return fn()
    failure, result = [None], None
    if is_main():
        try:
            result = fn()
        except Exception as e:
            failure = [(type(e).__name__, str(e), isinstance(e, InputError))]
            with _collective("broadcast"):
                dist.broadcast_object_list(failure, src=0)
            raise
    with _collective("broadcast"):
        dist.broadcast_object_list(failure, src=0)
    if failure[0] is not None:
        name, message, input_error = failure[0]
        raise InputError(message) if input_error else RuntimeError(f"rank 0 stopped: {name}: {message}")
    if not is_main():
        result = fn()
    barrier()
    return result

