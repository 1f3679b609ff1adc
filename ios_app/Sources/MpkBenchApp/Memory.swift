import Darwin
import Foundation

/// Memory as iOS accounts it: phys_footprint from task_info(TASK_VM_INFO) is what jetsam kills apps for,
/// so it is iOS's "resident" number. iOS has no VmHWM, so the peak is sampled by a background timer while
/// the model loads and runs (every 5 ms); a spike shorter than that can be missed, and results say so.
enum Memory {
    static func footprintMB() -> Double {
        var info = task_vm_info_data_t()
        var count = mach_msg_type_number_t(MemoryLayout<task_vm_info_data_t>.size / MemoryLayout<integer_t>.size)
        let kr = withUnsafeMutablePointer(to: &info) {
            $0.withMemoryRebound(to: integer_t.self, capacity: Int(count)) {
                task_info(mach_task_self_, task_flavor_t(TASK_VM_INFO), $0, &count)
            }
        }
        return kr == KERN_SUCCESS ? Double(info.phys_footprint) / 1_048_576.0 : 0
    }
}

/// Samples footprintMB() on a background queue until stopped; `peak` is the maximum seen.
final class PeakSampler {
    private var timer: DispatchSourceTimer?
    private(set) var peak: Double = 0
    private let lock = NSLock()

    func start() {
        peak = Memory.footprintMB()
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
        t.schedule(deadline: .now(), repeating: .milliseconds(5))
        t.setEventHandler { [weak self] in
            let v = Memory.footprintMB()
            self?.lock.lock(); if v > (self?.peak ?? 0) { self?.peak = v }; self?.lock.unlock()
        }
        t.resume()
        timer = t
    }

    func stop() -> Double {
        timer?.cancel(); timer = nil
        let v = Memory.footprintMB()
        lock.lock(); defer { lock.unlock() }
        return max(peak, v)
    }
}
