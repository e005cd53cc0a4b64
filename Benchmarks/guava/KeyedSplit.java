// shared/peers/guava/Keyed.java with one change, so that the 2-thread Guava figure can be compared with
// Tollgate's `core-compare 2 KEYS one split`: with more than one thread and more than one key, each thread
// walks its own disjoint slice of the keys (Keyed.java's threads all walk all the keys, in step). The
// warm-up passes, N, the timing and the printed line are Keyed.java's.
import com.google.common.util.concurrent.RateLimiter;
import java.util.concurrent.ConcurrentHashMap;
public class KeyedSplit {
  public static void main(String[] a) throws Exception {
    int threads = Integer.parseInt(a[0]); int keys = Integer.parseInt(a[1]);
    ConcurrentHashMap<String, RateLimiter> m = new ConcurrentHashMap<>();
    String[] names = new String[keys];
    for (int i = 0; i < keys; i++) names[i] = "wz_live_key_" + i;
    final long N = 10_000_000L;
    java.util.function.BiFunction<Integer, Integer, Runnable> slice = (lo, hi) -> () -> { int k = lo; for (long i = 0; i < N; i++) { m.computeIfAbsent(names[k], x -> RateLimiter.create(1e12)).tryAcquire(); k++; if (k == hi) k = lo; } };
    Runnable r = slice.apply(0, keys);
    r.run(); r.run();
    Thread[] ts = new Thread[threads];
    long t0 = System.nanoTime();
    for (int t = 0; t < threads; t++) { ts[t] = new Thread(keys > 1 ? slice.apply(keys * t / threads, keys * (t + 1) / threads) : r); ts[t].start(); }
    for (Thread t : ts) t.join();
    long dt = System.nanoTime() - t0;
    System.out.printf("guava keyed split (ConcurrentHashMap + RateLimiter) threads=%d keys=%d ns/op(per thread)=%.1f total Mops/s=%.1f%n", threads, keys, (double)dt / N, threads * N / (dt / 1e9) / 1e6);
  }
}
