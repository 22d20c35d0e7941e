// melt's benchmark host app for iPhones.
//
// An iPhone runs no shell, so melt installs this app and launches it with
//   --melt-out DIR [--melt-tool llama-bench|llama-completion] -- <the tool's arguments>
// (paths relative to the app's Documents folder). It runs the tool in-process
// (llama.cpp's llama_bench / llama_completion entry points), writes
// DIR/stdout.txt and DIR/stderr.txt, DIR/thermal.txt ("start STATE" and
// "end STATE": ProcessInfo's thermal state), then DIR/exit_code last, and
// exits. With --melt-thermal instead of a tool it writes only "now STATE" to
// DIR/thermal.txt and DIR/exit_code. melt pulls those files over AFC
// (house_arrest).
#import <Foundation/Foundation.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>

int llama_bench(int argc, char ** argv);       // tools/llama-bench/llama-bench.cpp
int llama_completion(int argc, char ** argv);  // tools/completion/completion.cpp

static const char * thermal_state() {
    switch ([NSProcessInfo processInfo].thermalState) {
        case NSProcessInfoThermalStateNominal: return "nominal";
        case NSProcessInfoThermalStateFair: return "fair";
        case NSProcessInfoThermalStateSerious: return "serious";
        case NSProcessInfoThermalStateCritical: return "critical";
    }
    return "unknown";
}

static void note_thermal(const std::string & out, const char * when, const char * mode) {
    if (FILE * f = std::fopen((out + "/thermal.txt").c_str(), mode)) {
        std::fprintf(f, "%s %s\n", when, thermal_state());
        std::fclose(f);
    }
}

static void write_exit_code(const std::string & out, int code) {
    const std::string tmp = out + "/exit_code.tmp";
    if (FILE * f = std::fopen(tmp.c_str(), "w")) {
        std::fprintf(f, "%d\n", code);
        std::fclose(f);
        std::rename(tmp.c_str(), (out + "/exit_code").c_str());
    }
}

static bool inside(const char * path) {
    return path[0] != '/' && std::strstr(path, "..") == nullptr;
}

int main(int argc, char * argv[]) {
    @autoreleasepool {
        NSString * docs = NSSearchPathForDirectoriesInDomains(NSDocumentDirectory, NSUserDomainMask, YES).firstObject;
        if (docs == nil || chdir(docs.fileSystemRepresentation) != 0) {
            return 3;
        }
        std::string out, tool = "llama-bench";
        bool probe = false;
        std::vector<char *> args{argv[0]};
        bool rest = false;
        for (int i = 1; i < argc; i++) {
            if (!rest && std::strcmp(argv[i], "--melt-out") == 0 && i + 1 < argc) {
                out = argv[++i];
            } else if (!rest && std::strcmp(argv[i], "--melt-tool") == 0 && i + 1 < argc) {
                tool = argv[++i];
            } else if (!rest && std::strcmp(argv[i], "--melt-thermal") == 0) {
                probe = true;
            } else if (!rest && std::strcmp(argv[i], "--") == 0) {
                rest = true;
            } else if (rest) {
                args.push_back(argv[i]);
            }
        }
        if (out.empty() || !inside(out.c_str())) {
            return 2;  // only folders inside Documents
        }
        [[NSFileManager defaultManager] createDirectoryAtPath:@(out.c_str())
                                  withIntermediateDirectories:YES attributes:nil error:nil];
        if (probe) {
            note_thermal(out, "now", "w");
            write_exit_code(out, 0);
            return 0;
        }
        note_thermal(out, "start", "w");
        if (!std::freopen((out + "/stdout.txt").c_str(), "w", stdout) ||
            !std::freopen((out + "/stderr.txt").c_str(), "w", stderr)) {
            return 3;
        }
        int code = 2;
        bool ok = true;
        for (size_t i = 1; i < args.size(); i++) {
            ok = ok && inside(args[i]);
        }
        args.push_back(nullptr);
        if (!ok) {
            std::fprintf(stderr, "paths outside the app's container\n");
        } else if (tool == "llama-bench") {
            code = llama_bench((int) args.size() - 1, args.data());
        } else if (tool == "llama-completion") {
            code = llama_completion((int) args.size() - 1, args.data());
        } else {
            std::fprintf(stderr, "this app runs llama-bench and llama-completion, not %s\n", tool.c_str());
        }
        std::fflush(stdout);
        std::fflush(stderr);
        note_thermal(out, "end", "a");
        write_exit_code(out, code);
        return 0;
    }
}
