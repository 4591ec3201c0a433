// The Boost.Interprocess peer of `mmkit-bench heap`: managed_shared_memory
// with the default rbtree_best_fit allocator, boost::unordered_map with an
// interprocess allocator, boost::interprocess::vector, interprocess_mutex.
// Built by the benchmark with g++ (Debian's libboost-dev headers).
//
// Usage: boost_peer MODE NAME [ARGS...]; prints "ns=<elapsed> ops=<count>".
#include <boost/interprocess/managed_shared_memory.hpp>
#include <boost/interprocess/allocators/allocator.hpp>
#include <boost/interprocess/containers/vector.hpp>
#include <boost/interprocess/sync/interprocess_mutex.hpp>
#include <boost/interprocess/sync/scoped_lock.hpp>
#include <boost/unordered_map.hpp>
#include <boost/date_time/posix_time/posix_time_types.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <functional>
#include <thread>
#include <vector>

namespace bip = boost::interprocess;
typedef bip::managed_shared_memory::segment_manager Seg;
typedef std::pair<const uint64_t, uint64_t> Pair;
typedef bip::allocator<Pair, Seg> PairAlloc;
typedef boost::unordered_map<uint64_t, uint64_t, boost::hash<uint64_t>, std::equal_to<uint64_t>, PairAlloc> Map;
typedef bip::allocator<uint64_t, Seg> U64Alloc;
typedef bip::vector<uint64_t, U64Alloc> Vec;

static const uint64_t K = 1000003;
static const size_t SEGMENT = size_t(1) << 30;

static uint64_t now_ns() {
    timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return uint64_t(t.tv_sec) * 1000000000ull + t.tv_nsec;
}

static uint64_t rng(uint64_t &s) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
}

// The key of index i in the scattered-keys workloads: an odd multiplier,
// so a bijection of u64 whose keys spread over all 64 bits.
static uint64_t scatter(uint64_t i) {
    return i * 0x9e3779b97f4a7c15ull;
}

static void wait_until(uint64_t start) {
    while (now_ns() < start) {
    }
}

static void report(uint64_t ns, uint64_t ops) {
    std::printf("ns=%llu ops=%llu\n", (unsigned long long)ns, (unsigned long long)ops);
}

// Looks every key up once, untimed, as the Rust child does: the first
// touch of each page of the segment is a one-time cost of the process,
// not of a lookup.
static uint64_t warm_up(const Map *map, uint64_t keys, bool scattered) {
    uint64_t sum = 0;
    for (uint64_t i = 0; i < keys; i++) {
        Map::const_iterator it = map->find(scattered ? scatter(i) : i);
        if (it != map->end()) sum += it->second;
    }
    return sum;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    const char *mode = argv[1];
    const char *name = argv[2];
    uint64_t a = argc > 3 ? std::strtoull(argv[3], 0, 10) : 0;
    uint64_t b = argc > 4 ? std::strtoull(argv[4], 0, 10) : 0;
    uint64_t start = argc > 5 ? std::strtoull(argv[5], 0, 10) : 0;
    if (!std::strcmp(mode, "remove")) {
        bip::shared_memory_object::remove(name);
        return 0;
    }
    if (!std::strcmp(mode, "setup") || !std::strcmp(mode, "inserts") || !std::strcmp(mode, "inserts-random") ||
        !std::strcmp(mode, "setup-scattered")) {
        // setup: a map with `a` keys (k -> k*K), untimed; inserts: timed,
        // one lock per insert as concurrent users must; inserts-random:
        // the same with `a` random keys (r -> r*K) from the xorshift below;
        // setup-scattered: keys scatter(i) -> i*K.
        bip::shared_memory_object::remove(name);
        bip::managed_shared_memory seg(bip::create_only, name, SEGMENT);
        bip::interprocess_mutex *mtx = seg.construct<bip::interprocess_mutex>("mtx")();
        Map *map = seg.construct<Map>("map")(16, boost::hash<uint64_t>(), std::equal_to<uint64_t>(), seg.get_allocator<Pair>());
        bool random = !std::strcmp(mode, "inserts-random");
        bool scattered = !std::strcmp(mode, "setup-scattered");
        uint64_t s = 12345;
        uint64_t t0 = now_ns();
        for (uint64_t i = 0; i < a; i++) {
            uint64_t k = random ? rng(s) : scattered ? scatter(i) : i;
            bip::scoped_lock<bip::interprocess_mutex> g(*mtx);
            map->insert(Pair(k, (scattered ? i : k) * K));
        }
        report(now_ns() - t0, a);
        return 0;
    }
    bip::managed_shared_memory seg(bip::open_only, name);
    if (!std::strcmp(mode, "lookups") || !std::strcmp(mode, "lookups-scattered")) {
        // Read-only: no lock (the best case for Boost).
        Map *map = seg.find<Map>("map").first;
        bool scattered = !std::strcmp(mode, "lookups-scattered");
        uint64_t keys = map->size(), s = b * 2654435761u + 1, sum = warm_up(map, keys, scattered);
        wait_until(start);
        uint64_t t0 = now_ns();
        for (uint64_t i = 0; i < a; i++) {
            uint64_t k = rng(s) % keys;
            Map::const_iterator it = map->find(scattered ? scatter(k) : k);
            if (it != map->end()) sum += it->second;
        }
        uint64_t ns = now_ns() - t0;
        if (sum % K != 0) return 3;
        report(ns, a);
    } else if (!std::strcmp(mode, "mixed")) {
        Map *map = seg.find<Map>("map").first;
        bip::interprocess_mutex *mtx = seg.find<bip::interprocess_mutex>("mtx").first;
        uint64_t keys = 1000000, s = b * 2654435761u + 1, sum = 0;
        wait_until(start);
        uint64_t t0 = now_ns();
        for (uint64_t i = 0; i < a; i++) {
            uint64_t r = rng(s), k = r % keys;
            bip::scoped_lock<bip::interprocess_mutex> g(*mtx);
            if ((r >> 32) % 10 == 0) {
                (*map)[k] = k * K;
            } else {
                Map::const_iterator it = map->find(k);
                if (it != map->end()) sum += it->second;
            }
        }
        uint64_t ns = now_ns() - t0;
        if (sum % K != 0) return 3;
        report(ns, a);
    } else if (!std::strcmp(mode, "alloc")) {
        // Random sizes 16..4096, a window of 1000 live blocks.
        uint64_t s = 12345;
        std::vector<void *> live(1000, (void *)0);
        uint64_t t0 = now_ns();
        for (uint64_t i = 0; i < a; i++) {
            size_t slot = rng(s) % live.size();
            if (live[slot]) seg.deallocate(live[slot]);
            live[slot] = seg.allocate(16 + rng(s) % 4081);
        }
        uint64_t ns = now_ns() - t0;
        for (size_t i = 0; i < live.size(); i++)
            if (live[i]) seg.deallocate(live[i]);
        report(ns, a);
    } else if (!std::strcmp(mode, "push")) {
        bip::interprocess_mutex *mtx = seg.find<bip::interprocess_mutex>("mtx").first;
        Vec *v = seg.construct<Vec>("vec")(seg.get_allocator<uint64_t>());
        uint64_t t0 = now_ns();
        for (uint64_t i = 0; i < a; i++) {
            bip::scoped_lock<bip::interprocess_mutex> g(*mtx);
            v->push_back(i);
        }
        report(now_ns() - t0, a);
        seg.destroy<Vec>("vec");
    } else if (!std::strcmp(mode, "victim")) {
        // Dies holding the mutex (the parent SIGKILLs it).
        bip::interprocess_mutex *mtx = seg.find<bip::interprocess_mutex>("mtx").first;
        mtx->lock();
        std::printf("locked\n");
        std::fflush(stdout);
        for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    } else if (!std::strcmp(mode, "survivor")) {
        // a = timeout in ms; b = the victim's time of death (ns).
        bip::interprocess_mutex *mtx = seg.find<bip::interprocess_mutex>("mtx").first;
        boost::posix_time::ptime until =
            boost::posix_time::microsec_clock::universal_time() + boost::posix_time::milliseconds(a);
        bool got = mtx->timed_lock(until);
        uint64_t ns = now_ns() - b;
        if (!got) {
            std::printf("timeout\n");
            return 0;
        }
        mtx->unlock();
        report(ns, 1);
    } else {
        return 2;
    }
    return 0;
}
