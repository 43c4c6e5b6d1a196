_ferricorn() {
    local i cur prev opts cmd
    COMPREPLY=()
    if [[ "${BASH_VERSINFO[0]}" -ge 4 ]]; then
        cur="$2"
    else
        cur="${COMP_WORDS[COMP_CWORD]}"
    fi
    prev="$3"
    cmd=""
    opts=""

    for i in "${COMP_WORDS[@]:0:COMP_CWORD}"
    do
        case "${cmd},${i}" in
            ",$1")
                cmd="ferricorn"
                ;;
            *)
                ;;
        esac
    done

    case "${cmd}" in
        ferricorn)
            opts="-b -w -k -t -e -n -p -u -g -m -c -h -V --bind --metrics-bind --control-socket --health-bind --backlog --workers --worker-class --threads --worker-connections --max-requests --max-requests-jitter --max-worker-memory --max-worker-lifetime --max-worker-lifetime-jitter --timeout --request-timeout --graceful-timeout --keep-alive --preload --reload --reload-extra-file --post-fork --post-worker-init --pre-request --post-request --worker-int --worker-abort --worker-exit --on-starting --when-ready --on-reload --pre-fork --pre-exec --child-exit --nworkers-changed --on-exit --limit-request-line --limit-request-fields --limit-request-field_size --header-timeout --min-request-body-rate --min-response-rate --permit-obsolete-folding --permit-unconventional-http-method --casefold-http-method --strip-header-spaces --header-map --forwarded-allow-ips --proxy-protocol --proxy-allow-from --forwarder-headers --certfile --keyfile --ca-certs --cert-reqs --ciphers --http-protocols --http2-cleartext --http2-max-concurrent-streams --http2-initial-window-size --http2-max-frame-size --http2-max-header-list-size --chdir --env --pythonpath --virtualenv --name --pid --user --group --umask --initgroups --access-logfile --access-logformat --log-config --log-config-json --log-config-dict --statsd-host --statsd-prefix --error-logfile --capture-output --asgi-loop --asgi-lifespan --root-path --websocket-max-message-size --journald --log-level --config --check-config --print-config --worker-tmp-dir --no-sendfile --reuse-port --enable-stdio-inheritance --log-syslog --reload-engine --dogstatsd-tags --ssl-version --suppress-ragged-eofs --do-handshake-on-connect --help --version"
            if [[ ${cur} == -* || ${COMP_CWORD} -eq 1 ]] ; then
                COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
                return 0
            fi
            case "${prev}" in
                --bind)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -b)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --metrics-bind)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --control-socket)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --health-bind)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --backlog)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --workers)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -w)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --worker-class)
                    COMPREPLY=($(compgen -W "sync gthread gevent asgi" -- "${cur}"))
                    return 0
                    ;;
                -k)
                    COMPREPLY=($(compgen -W "sync gthread gevent asgi" -- "${cur}"))
                    return 0
                    ;;
                --threads)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --worker-connections)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-requests)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-requests-jitter)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-worker-memory)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-worker-lifetime)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --max-worker-lifetime-jitter)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -t)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --request-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --graceful-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --keep-alive)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --reload-extra-file)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --post-fork)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --post-worker-init)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pre-request)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --post-request)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --worker-int)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --worker-abort)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --worker-exit)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --on-starting)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --when-ready)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --on-reload)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pre-fork)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pre-exec)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --child-exit)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --nworkers-changed)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --on-exit)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --limit-request-line)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --limit-request-fields)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --limit-request-field_size)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --header-timeout)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --min-request-body-rate)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --min-response-rate)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --header-map)
                    COMPREPLY=($(compgen -W "drop refuse dangerous" -- "${cur}"))
                    return 0
                    ;;
                --forwarded-allow-ips)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --proxy-protocol)
                    COMPREPLY=($(compgen -W "off v1 v2 auto" -- "${cur}"))
                    return 0
                    ;;
                --proxy-allow-from)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --forwarder-headers)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --certfile)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --keyfile)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ca-certs)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --cert-reqs)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ciphers)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --http-protocols)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --http2-cleartext)
                    COMPREPLY=($(compgen -W "off prior-knowledge" -- "${cur}"))
                    return 0
                    ;;
                --http2-max-concurrent-streams)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --http2-initial-window-size)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --http2-max-frame-size)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --http2-max-header-list-size)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --chdir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --env)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -e)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pythonpath)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --virtualenv)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --name)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -n)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --pid)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -p)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --user)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -u)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --group)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -g)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --umask)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -m)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --access-logfile)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --access-logformat)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --log-config)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --log-config-json)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --log-config-dict)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --statsd-host)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --statsd-prefix)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --error-logfile)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --asgi-loop)
                    COMPREPLY=($(compgen -W "auto asyncio uvloop" -- "${cur}"))
                    return 0
                    ;;
                --asgi-lifespan)
                    COMPREPLY=($(compgen -W "auto on off" -- "${cur}"))
                    return 0
                    ;;
                --root-path)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --websocket-max-message-size)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --journald)
                    COMPREPLY=($(compgen -W "auto yes no" -- "${cur}"))
                    return 0
                    ;;
                --log-level)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --config)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                -c)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --worker-tmp-dir)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --reload-engine)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --dogstatsd-tags)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                --ssl-version)
                    COMPREPLY=($(compgen -f "${cur}"))
                    return 0
                    ;;
                *)
                    COMPREPLY=()
                    ;;
            esac
            COMPREPLY=( $(compgen -W "${opts}" -- "${cur}") )
            return 0
            ;;
    esac
}

if [[ "${BASH_VERSINFO[0]}" -eq 4 && "${BASH_VERSINFO[1]}" -ge 4 || "${BASH_VERSINFO[0]}" -gt 4 ]]; then
    complete -F _ferricorn -o nosort -o bashdefault -o default ferricorn
else
    complete -F _ferricorn -o bashdefault -o default ferricorn
fi
