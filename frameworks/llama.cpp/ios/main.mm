// melt's benchmark host app for iPhones.
//
// An iPhone runs no shell, so melt installs this app and launches it with
//   --melt-out DIR -- <llama-bench arguments>
// (paths relative to the app's Documents folder). It runs llama-bench
// in-process, writes DIR/stdout.txt and DIR/stderr.txt, then DIR/exit_code
// last, and exits. melt pulls those files over AFC (house_arrest).
#import <Foundation/Foundation.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>

int llama_bench_main(int argc, char ** argv);  // llama-bench.cpp's main, renamed at compile time

int main(int argc, char * argv[]) {
    @autoreleasepool {
        NSString * docs = NSSearchPathForDirectoriesInDomains(NSDocumentDirectory, NSUserDomainMask, YES).firstObject;
        if (docs == nil || chdir(docs.fileSystemRepresentation) != 0) {
            return 3;
        }
        std::string out;
        std::vector<char *> args{argv[0]};
        bool rest = false;
        for (int i = 1; i < argc; i++) {
            if (!rest && std::strcmp(argv[i], "--melt-out") == 0 && i + 1 < argc) {
                out = argv[++i];
            } else if (!rest && std::strcmp(argv[i], "--") == 0) {
                rest = true;
            } else if (rest) {
                args.push_back(argv[i]);
            }
        }
        if (out.empty() || out[0] == '/' || out.find("..") != std::string::npos) {
            return 2;  // only folders inside Documents
        }
        [[NSFileManager defaultManager] createDirectoryAtPath:@(out.c_str())
                                  withIntermediateDirectories:YES attributes:nil error:nil];
        if (!std::freopen((out + "/stdout.txt").c_str(), "w", stdout) ||
            !std::freopen((out + "/stderr.txt").c_str(), "w", stderr)) {
            return 3;
        }
        args.push_back(nullptr);
        const int code = llama_bench_main((int) args.size() - 1, args.data());
        std::fflush(stdout);
        std::fflush(stderr);
        const std::string tmp = out + "/exit_code.tmp";
        if (FILE * f = std::fopen(tmp.c_str(), "w")) {
            std::fprintf(f, "%d\n", code);
            std::fclose(f);
            std::rename(tmp.c_str(), (out + "/exit_code").c_str());
        }
        return 0;
    }
}
