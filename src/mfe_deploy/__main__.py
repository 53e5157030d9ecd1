from mfe_deploy.cli.main import main

main()
