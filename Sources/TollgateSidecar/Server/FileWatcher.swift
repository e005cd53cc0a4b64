import Crypto
import Foundation
import ServiceLifecycle

/// Reloads the sidecar when its configuration file or key file changes (`server.watch_files`).
///
/// Every `server.watch_interval` it reads both files through their paths and compares the SHA-256 of
/// their bytes with the last seen: contents, not modification times or inodes, so an edit in place, a
/// new file renamed over the old one and a Kubernetes ConfigMap update (the `..data` symlink replaced
/// atomically, every file name a symlink through it) are all seen, and a touch without a change is
/// not. A change reloads as SIGHUP does (counters kept); a broken file is refused and logged by the
/// reload, the old configuration stays, and that file is not tried again until it changes once more.
struct FileWatcher: Service {
    let sidecar: Sidecar
    let interval: Duration

    /// The digest of each watched file's bytes (nil: unreadable or absent), by path.
    static func fingerprints(_ paths: [String]) -> [String: String?] {
        var out: [String: String?] = [:]
        for path in paths {
            out[path] = FileManager.default.contents(atPath: path).map { SHA256.hash(data: $0).description }
        }
        return out
    }

    func run() async throws {
        // Graceful shutdown cancels the wait: the sidecar does not wait an interval to stop.
        await cancelWhenGracefulShutdown { await watch() }
    }

    func watch() async {
        var seen = Self.fingerprints(sidecar.watchedFiles())
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: interval)
            } catch {
                return
            }
            let now = Self.fingerprints(sidecar.watchedFiles())
            guard now != seen else { continue }
            sidecar.logger.info(
                "configuration files changed: reloading", metadata: ["files": "\(now.keys.filter { now[$0] != seen[$0] }.sorted())"])
            sidecar.reload()
            // The versions read before the reload, not after: a file that changed again in between is
            // then seen as changed on the next tick and reloaded once more (reloading is idempotent);
            // reading after the reload could take a version the reload never read for the one in force.
            seen = now
        }
    }
}
