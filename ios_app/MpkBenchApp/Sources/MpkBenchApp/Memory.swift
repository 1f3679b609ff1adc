import BenchmarkCore
import Darwin
import Foundation

/// Memory as iOS accounts it: phys_footprint from task_info(TASK_VM_INFO) is what jetsam kills apps for, so it is
/// iOS's "resident" number. iOS has no VmHWM, so the peak is sampled by a background timer from `startPeak()` to
/// `stopPeak()` (every 5 ms); a spike shorter than that can be missed, and results say so in memory.source.
final class FootprintMemory: MemoryProbe {
    let source = "task_info(TASK_VM_INFO) phys_footprint, peak sampled every 5 ms"
    private var timer: DispatchSourceTimer?
    private var peak: Double = 0
    private let lock = NSLock()

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

    func residentMb() -> Double { Self.footprintMB() }

    func startPeak() {
        lock.lock(); peak = Self.footprintMB(); lock.unlock()
        let t = DispatchSource.makeTimerSource(queue: DispatchQueue.global(qos: .utility))
        t.schedule(deadline: .now(), repeating: .milliseconds(5))
        t.setEventHandler { [weak self] in
            guard let self = self else { return }
            let v = Self.footprintMB()
            self.lock.lock(); if v > self.peak { self.peak = v }; self.lock.unlock()
        }
        t.resume()
        timer = t
    }

    func stopPeak() -> Double {
        timer?.cancel(); timer = nil
        let v = Self.footprintMB()
        lock.lock(); defer { lock.unlock() }
        return max(peak, v)
    }
}
