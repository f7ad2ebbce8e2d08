// Runs each README block program from the repository root and says
// "consumer ok: slither <version>" when every one exited 0.
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "programs.hpp"

int main() {
  std::filesystem::current_path(repo_dir);
  int failed = 0;
  for (const char* program : programs) {
    std::printf("--- %s\n", program);
    std::fflush(stdout);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execl(program, program, static_cast<char*>(nullptr));
      std::perror("execl");
      ::_exit(127);
    }
    int status = 0;
    if (pid < 0 || ::waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0) {
      std::printf("FAILED: %s (status %d)\n", program, status);
      ++failed;
    }
  }
  if (failed != 0) return 1;
  std::printf("consumer ok: slither %s\n", SLITHER_VERSION_TEXT);
}
