// shared/peers/guava/Keyed.java with one change, the control for `core-compare … shuffled`: the
// timed threads visit the keys in the same fixed random order as core-compare's (the same generator),
// instead of the order they were created in. The warm-up passes (in creation order), N, the timing and the
// printed line are Keyed.java's. It shows how much of each side's figure over many keys comes from visiting
// memory in the order it was allocated.
import com.google.common.util.concurrent.RateLimiter;
import java.util.concurrent.ConcurrentHashMap;
public class KeyedShuffled {
  public static void main(String[] a) throws Exception {
    int threads = Integer.parseInt(a[0]); int keys = Integer.parseInt(a[1]);
    ConcurrentHashMap<String, RateLimiter> m = new ConcurrentHashMap<>();
    String[] names = new String[keys];
    for (int i = 0; i < keys; i++) names[i] = "wz_live_key_" + i;
    final long N = 10_000_000L;
    java.util.function.Function<String[], Runnable> walk = order -> () -> { int k = 0; for (long i = 0; i < N; i++) { m.computeIfAbsent(order[k], x -> RateLimiter.create(1e12)).tryAcquire(); k++; if (k == keys) k = 0; } };
    Runnable r = walk.apply(names);
    r.run(); r.run();
    String[] shuffled = names.clone();
    long state = 0x9e3779b97f4a7c15L;
    for (int index = keys - 1; index > 0; index--) {
      state = state * 6364136223846793005L + 1442695040888963407L;
      int other = (int) Long.remainderUnsigned(state >>> 33, index + 1);
      String t = shuffled[index]; shuffled[index] = shuffled[other]; shuffled[other] = t;
    }
    Runnable timed = walk.apply(shuffled);
    Thread[] ts = new Thread[threads];
    long t0 = System.nanoTime();
    for (int t = 0; t < threads; t++) { ts[t] = new Thread(timed); ts[t].start(); }
    for (Thread t : ts) t.join();
    long dt = System.nanoTime() - t0;
    System.out.printf("guava keyed shuffled (ConcurrentHashMap + RateLimiter) threads=%d keys=%d ns/op(per thread)=%.1f total Mops/s=%.1f%n", threads, keys, (double)dt / N, threads * N / (dt / 1e9) / 1e6);
  }
}
