# Drives a real interactive zsh through zpty: loads _kiln via compinit, types a line, presses Tab,
# and prints the matches offered (compadd is wrapped to report them between marker lines).
# usage: zsh -f zsh_complete.zsh FPATH_DIR KILN_BIN_DIR "line to complete"
zmodload zsh/zpty
fdir=$1; bindir=$2; line=$3
zpty -b z "zsh -f -i"
zpty -w z "PATH=$bindir:\$PATH; PS1='%% '; fpath=($fdir \$fpath); autoload -Uz compinit; compinit -u -D -d $fdir/zcompdump"
zpty -w z "compadd() { local -a __m; builtin compadd -O __m \"\$@\"; print -rl -- '<<''M' \$__m 'M''>>' >/dev/tty; builtin compadd \"\$@\" }"
zpty -w z "zstyle ':completion:*' list-prompt ''; zstyle ':completion:*' menu no; echo READY-''MARK"
out=""
deadline=$(( SECONDS + 20 ))
while (( SECONDS < deadline )); do
  zpty -r -t z chunk && out+=$chunk
  [[ $out == *READY-MARK* ]] && break
  sleep 0.05
done
zpty -w -n z "$line"$'\t'
res=""
deadline=$(( SECONDS + 20 ))
while (( SECONDS < deadline )); do
  zpty -r -t z chunk && res+=$chunk
  if [[ $res == *'M>>'* ]]; then
    # Drain until the shell has been quiet for half a second: _describe may call compadd twice.
    quiet=0
    while (( quiet < 20 )); do
      if zpty -r -t z chunk; then res+=$chunk; quiet=0; else (( quiet++ )); sleep 0.05; fi
    done
    break
  fi
  sleep 0.05
done
print -r -- "$res" | tr -d '\r' | sed 's/\x1b\[[0-9;?]*[a-zA-Z]//g' | awk '/<<M$/{f=1;next} $0=="M>>"{f=0} f' | sort -u
zpty -d z
