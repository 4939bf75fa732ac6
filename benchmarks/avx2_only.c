/* Makes this CPU look like an AVX2 one without AVX-512, VNNI or AMX to the process it is preloaded into, so that
 * ONNX Runtime, PyTorch and NumPy pick the kernels they run on such a CPU (a Haswell-class Intel or an AMD EPYC
 * before Zen 4), at this CPU's own speed. benchmarks/avx2_only.py builds it and runs a command under it.
 *
 * How: Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID, flag "cpuid_fault" in /proc/cpuinfo) makes every
 * CPUID instruction of the process raise SIGSEGV; the handler runs the real CPUID with faulting briefly off,
 * clears the feature bits below and steps over the instruction. The setting is per thread and inherited by the
 * threads and processes started after it (execve resets it; the preload sets it again there). Code that calls
 * CPUID after installing its own SIGSEGV handler would crash: Python's faulthandler is one (pytest enables it), so
 * run benchmark scripts, not pytest, under it. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#define BIT(n) (1u << (n))

/* leaf 7 subleaf 0 */
static const uint32_t HIDE_7_0_EBX = BIT(16) | BIT(17) | BIT(21) | BIT(26) | BIT(27) | BIT(28) | BIT(30) | BIT(31);
/* AVX512F DQ IFMA PF ER CD BW VL */
static const uint32_t HIDE_7_0_ECX = BIT(1) | BIT(6) | BIT(11) | BIT(12) | BIT(14);
/* AVX512_VBMI VBMI2 VNNI BITALG VPOPCNTDQ */
static const uint32_t HIDE_7_0_EDX = BIT(2) | BIT(3) | BIT(8) | BIT(22) | BIT(23) | BIT(24) | BIT(25);
/* AVX512_4VNNIW 4FMAPS VP2INTERSECT, AMX_BF16, AVX512_FP16, AMX_TILE, AMX_INT8 */
/* leaf 7 subleaf 1 */
static const uint32_t HIDE_7_1_EAX = BIT(4) | BIT(5) | BIT(21) | BIT(23);  /* AVX_VNNI AVX512_BF16 AMX_FP16 AVX_IFMA */
static const uint32_t HIDE_7_1_EDX = BIT(4) | BIT(5) | BIT(10) | BIT(19);  /* AVX_VNNI_INT8 NE_CONVERT VNNI_INT16 AVX10 */

static long set_cpuid(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

static void real_cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4]) {
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static void on_segv(int sig, siginfo_t *info, void *raw) {
    ucontext_t *ctx = raw;
    greg_t *g = ctx->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    (void)info;
    if (ip[0] != 0x0f || ip[1] != 0xa2) {  /* a real fault: let it kill the process as it would have */
        signal(sig, SIG_DFL);
        return;
    }
    uint32_t leaf = (uint32_t)g[REG_RAX], sub = (uint32_t)g[REG_RCX], r[4];
    set_cpuid(1);
    real_cpuid(leaf, sub, r);
    set_cpuid(0);
    if (leaf == 7 && sub == 0) {
        r[1] &= ~HIDE_7_0_EBX;
        r[2] &= ~HIDE_7_0_ECX;
        r[3] &= ~HIDE_7_0_EDX;
    } else if (leaf == 7 && sub == 1) {
        r[0] &= ~HIDE_7_1_EAX;
        r[3] &= ~HIDE_7_1_EDX;
    } else if (leaf == 0x24) {  /* AVX10's own leaf */
        memset(r, 0, sizeof(uint32_t) * 4);
    }
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
}

__attribute__((constructor)) static void hide_features(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGSEGV, &sa, NULL) != 0 || set_cpuid(0) != 0) {
        fprintf(stderr, "avx2_only: this kernel or CPU has no CPUID faulting; features left as they are\n");
        exit(3);  /* a figure under a wrong label would be worse than none */
    }
}
