//! Splitting independent work over the machine's cores (at most four), keeping its order:
//! large renderer output is parsed, and `ferry render` prints it, this way.

/// Runs `work` on `items` cut into consecutive parts, one per core (at most four), and returns
/// the parts' results in order. Everything runs on the calling thread, as one part, when
/// `worth_threads` is false or there is a single core. A part whose worker panicked comes
/// back as `None`.
pub fn map_parts<T: Send, R: Send>(
    items: Vec<T>,
    worth_threads: bool,
    work: impl Fn(Vec<T>) -> R + Sync,
) -> Vec<Option<R>> {
    let threads = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .min(4);
    if !worth_threads || threads < 2 || items.len() < 2 {
        return vec![Some(work(items))];
    }
    let chunk = items.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    let mut rest = items;
    while rest.len() > chunk {
        let tail = rest.split_off(chunk);
        parts.push(rest);
        rest = tail;
    }
    parts.push(rest);
    let work = &work;
    std::thread::scope(|scope| {
        let workers: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || work(part)))
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().ok())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_come_back_in_order() {
        let items: Vec<u32> = (0..1000).collect();
        let threaded: Vec<u32> = map_parts(items.clone(), true, |part| part)
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        assert_eq!(threaded, items);
        assert_eq!(
            map_parts(items.clone(), false, |part| part.len()),
            [Some(1000)]
        );
        assert_eq!(
            map_parts(Vec::<u32>::new(), true, |part| part.len()),
            [Some(0)]
        );
    }
}
